"""bounce - the bounce, defer and trace services.

SYNOPSIS
    bounce [generic daemon options]
    (master.cf: bounce unix - - y - 0 bounce
                defer  unix - - y - 0 bounce
                trace  unix - - y - 0 bounce)

DESCRIPTION
    Postfix's bounce(8).  One program serves three services; the master.cf
    service name says which per-message logfile it works on: bounce/ID
    (recipients that failed), defer/ID (recipients delayed) or trace/ID
    (delivery records for NOTIFY=SUCCESS, sendmail -v and -bv).

    Requests (pfy.ipc.bounce_client):
      append   add per-recipient status records to the service's logfile
               (bounce_append, defer_append, trace_append);
      flush    on "bounce": send the non-delivery report built from
               bounce/ID and delete the log; on "defer": the same from
               defer/ID, for mail that expired in the queue;
      warn     on "defer": send a delay warning from defer/ID;
      trace    on "trace": send a success or address verification report;
      one      send a non-delivery report for the one recipient given.

    A notice is an RFC 3464 multipart/report (pfy.dsn.report): the
    template text, a message/delivery-status part, and the original
    message (RET=FULL, within bounce_size_limit) or its headers.  It is
    submitted to cleanup with the null sender and logged as Postfix does:
        4ABC: sender non-delivery notification: 5DEF
    Notices about a bounce go to postmaster as a double bounce (when
    notify_classes has bounce or 2bounce); notices about a double bounce
    are dropped with a warning, so notices never loop.

SECURITY
    Low to moderate risk: reads queue files and logfiles, writes logfiles,
    and submits mail through cleanup with a sender it chooses (the null
    sender or double_bounce_sender); it never runs a program.  Runs
    chrooted as mail_owner; the templates file is read before chroot.
    Queue IDs in requests are checked to be queue IDs, so a client cannot
    name another file.

PARAMETERS
    bounce_template_file, bounce_size_limit, notify_classes,
    bounce_notice_recipient, 2bounce_notice_recipient,
    delay_notice_recipient, double_bounce_sender, delay_warning_time,
    maximal_queue_lifetime, enable_threaded_bounces, mail_name,
    myhostname, bounce_service_name, defer_service_name,
    trace_service_name, cleanup_service_name, ipc_timeout (see postconf(5))
"""

from __future__ import annotations

import os

# Imported here, before the skeleton's chroot hides the Python library.
from pfy import log
from pfy.daemons.bounce.service import BounceService, logfile_of_service
from pfy.dsn.templates import TemplateError, load_templates
from pfy.ipc.attr import ProtocolError
from pfy.ipc.bounce_client import PROTOCOL, BounceAppend, BounceNotify, BounceStatus
from pfy.ipc.channel import AttrConnection
from pfy.queue import Queue
from pfy.server.lifecycle import Fatal

__all__ = ["main", "BounceService"]


def _pre_jail(ctx) -> None:
    cfg = ctx.cfg
    try:
        logfile = logfile_of_service(ctx.service, cfg)
    except ValueError as exc:
        raise Fatal(str(exc)) from None
    try:
        templates = load_templates(cfg.bounce_template_file, warn=log.warning)
    except OSError as exc:
        raise Fatal(f"open {cfg.bounce_template_file}: {exc.strerror}") from None
    except TemplateError as exc:
        raise Fatal(str(exc)) from None
    queue = Queue(".", hash_queue_depth=cfg.hash_queue_depth,
                  hash_queue_names=cfg.hash_queue_names)
    ctx.data["service"] = BounceService(
        cfg, queue, templates, logfile,
        cleanup_path=os.path.join("public", cfg.cleanup_service_name))
    # Templates are expanded lazily; expand now so a bad $name is fatal
    # at start-up (and in the logs once), not at the first bounce.
    from pfy.dsn.templates import expand_text
    svc = ctx.data["service"]
    try:
        for t in templates.values():
            expand_text(t, svc.lookup)
    except TemplateError as exc:
        raise Fatal(str(exc)) from None


def _serve(ctx, sock) -> None:
    conn = AttrConnection(sock)
    conn.greet(PROTOCOL)
    try:
        req = conn.receive((BounceAppend, BounceNotify))
    except EOFError:
        return
    except ProtocolError as exc:
        log.warning(f"bad bounce request: {exc}")
        return
    status = ctx.data["service"].handle(req)
    conn.send(BounceStatus(status))
    conn.flush()


def main() -> None:
    from pfy.server import single
    single.serve(_serve, pre_jail=_pre_jail, program="bounce")


if __name__ == "__main__":
    main()
