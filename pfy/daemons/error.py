"""error - the error and retry delivery agents.

SYNOPSIS
    error [generic daemon options]
    (master.cf: error unix - - y - - error
                retry unix - - y - - error)

DESCRIPTION
    Postfix's error(8): takes delivery requests from qmgr and fails every
    recipient with the reason in the request's next-hop, as transport_maps
    (transport(5)) or trivial-rewrite put it there: "error:5.1.1 mailbox
    unavailable" bounces with 5.1.1 and that text; a next-hop without a
    status code gets 5.0.0 (service "error") or 4.0.0 (service "retry").

    Which of the two it is follows the master.cf service name, exactly as
    Postfix does: the service called "error" bounces (bounce_append), the
    one called "retry" defers (defer_append); any other name is a fatal
    configuration error.  A status code of the wrong class is replaced by
    the service's default class (bounce_append/defer_append do the same):
    "error" never defers and "retry" never bounces.

    Log lines are Postfix's:
        to=<u@example.com>, relay=none, delay=0.1, delays=0.1/0/0/0,
        dsn=5.1.1, status=bounced (mailbox unavailable)
    soft_bounce = yes turns the bounces into deferrals.

SECURITY
    Not security sensitive: never opens the queue file (qmgr marks the
    bounced recipients done).  Runs chrooted as mail_owner (master.cf).

PARAMETERS
    soft_bounce, ipc_timeout, max_idle, max_use (see postconf(5))
"""

from __future__ import annotations

import re

from pfy import log
from pfy.ipc.attr import ProtocolError
from pfy.ipc.delivery import AgentSession, DeliveryReply, DeliveryRequest, read_request, send_reply
from pfy.server.lifecycle import Fatal

__all__ = ["main", "split_dsn", "fail_all"]

# dsn_util.c dsn_valid(): class 2/4/5, subject 1-3 digits, detail 1-3 digits.
_DSN = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")

SERVICE_DEFAULTS = {"error": "5.0.0", "retry": "4.0.0"}   # error.c error_service()
RELAY = "none"          # error.c: the "relay" of every status line


def split_dsn(default: str, text: str) -> tuple[str, str]:
    """dsn_split(): "5.1.1 no such user" -> ("5.1.1", "no such user");
    text without a leading status code -> (default, text)."""
    m = _DSN.match(text)
    if not m:
        return default, text
    return m.group(0), text[m.end():].lstrip()


def fail_all(session: AgentSession, default: str) -> None:
    """Bounce or defer every recipient with the next-hop's status and text."""
    req = session.request
    dsn, reason = split_dsn(default, req.nexthop)
    if dsn[0] != default[0]:
        # bounce_append()/defer_append(): "ignoring dsn code" of the other class.
        log.warning(f"{req.queue_id}: ignoring dsn code \"{dsn}\" for the "
                    f"{'bounce' if default[0] == '5' else 'defer'} service")
        dsn = default
    for rcpt in req.recipients:
        if dsn.startswith("5"):
            session.bounce(rcpt, dsn, reason, RELAY)
        else:
            session.defer(rcpt, dsn, reason, RELAY)


def handle(ctx, req: DeliveryRequest) -> DeliveryReply:
    # error.c marks nothing before the bounce is recorded: qmgr marks the
    # bounced recipients after writing bounce/ID (pfy.ipc.delivery).  We
    # never open the queue file at all.
    session = AgentSession(req, None, soft_bounce_on=ctx.cfg.soft_bounce)
    if not req.nexthop:
        # error.c: msg_fatal("empty nexthop hostname"); qmgr defers the mail.
        raise Fatal("empty nexthop hostname")
    fail_all(session, ctx.data["default_dsn"])
    return session.finish(RELAY)


def setup(ctx) -> None:
    default = SERVICE_DEFAULTS.get(ctx.service)
    if default is None:
        raise Fatal(f"bad error service name: {ctx.service}")
    ctx.data["default_dsn"] = default


def serve_one(ctx, sock) -> None:
    try:
        req = read_request(sock, timeout=ctx.cfg.ipc_timeout)
    except (ProtocolError, OSError, ValueError) as exc:
        log.warning(f"delivery request: {exc}")
        return
    send_reply(sock, handle(ctx, req))


def main() -> None:
    from pfy.server import single
    single.serve(serve_one, pre_jail=setup, program="error")
