"""discard - the discard delivery agent.

SYNOPSIS
    discard [generic daemon options]   (master.cf: discard unix - - y - - discard)

DESCRIPTION
    Postfix's discard(8): takes delivery requests from qmgr and reports
    every recipient as delivered without delivering anything.  The
    request's next-hop is the reason that is logged, with a leading
    status code when it has one ("discard:2.0.0 silently dropped"); a
    transport_maps entry "discard:" leaves the recipient domain as the
    next-hop (transport(5)), and that is what the log shows then:

        to=<u@example.com>, relay=none, delay=0.1, delays=0.1/0/0/0,
        dsn=2.0.0, status=sent (example.com)

    Recipients are marked done in the queue file before the reply, so a
    crash cannot make them be discarded twice.

SECURITY
    Not security sensitive: reads no message content.  Runs chrooted as
    mail_owner (master.cf).

PARAMETERS
    ipc_timeout, max_idle, max_use (see postconf(5))
"""

from __future__ import annotations

import os
import re

from pfy import log
from pfy.ipc.attr import ProtocolError
from pfy.ipc.delivery import AgentSession, DeliveryReply, DeliveryRequest, read_request, send_reply
from pfy.server.lifecycle import Fatal

__all__ = ["main", "discard_all"]

_DSN = re.compile(r"^2\.(\d{1,3})\.(\d{1,3})(?=\s|$)")     # dsn_valid(), success class
RELAY = "none"


def discard_all(session: AgentSession) -> None:
    req = session.request
    m = _DSN.match(req.nexthop)
    dsn, reason = (m.group(0), req.nexthop[m.end():].lstrip()) if m else ("2.0.0", req.nexthop)
    for rcpt in req.recipients:
        session.sent(rcpt, reason, RELAY, dsn)


def handle(req: DeliveryRequest, queue_root: str) -> DeliveryReply:
    if not req.nexthop:
        raise Fatal("empty nexthop hostname")        # discard.c, as Postfix
    path = os.path.join(queue_root, req.queue_name, req.queue_id)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        # discard.c makes this fatal so that qmgr backs off; a plain defer
        # (the unreported recipients) has the same effect without a restart.
        session = AgentSession(req, None)
        return session.finish(RELAY, f"cannot open queue file: {exc.strerror}")
    try:
        session = AgentSession(req, fd)
        discard_all(session)
        return session.finish(RELAY)
    finally:
        os.close(fd)


def serve_one(ctx, sock) -> None:
    try:
        req = read_request(sock, timeout=ctx.cfg.ipc_timeout)
    except (ProtocolError, OSError, ValueError) as exc:
        log.warning(f"delivery request: {exc}")
        return
    send_reply(sock, handle(req, ctx.queue_directory))


def main() -> None:
    from pfy.server import single
    single.serve(serve_one, program="discard")
