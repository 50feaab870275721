"""qmgr - the queue manager: incoming -> active -> delivery agents.

SYNOPSIS
    qmgr [generic daemon options]   (master.cf: qmgr unix/fifo n - n 300 1 qmgr)

DESCRIPTION
    Moves complete messages from incoming/ (and, when their retry time has
    come, from deferred/) into active/, within qmgr_message_active_limit
    messages and qmgr_message_recipient_limit in-memory recipients; resolves
    each recipient through trivial-rewrite into a transport and nexthop;
    schedules deliveries with per-destination concurrency windows, recipient
    limits and round-robin fairness (scheduler.py); sends each delivery
    request to private/<transport> and settles every recipient from the
    reply (active.py).  A message with no recipient left is removed
    ("ID: removed"); one with deferred recipients moves to deferred/ with
    the reasons in defer/ID and its next retry time as the file's mtime
    (exponential backoff); an unreadable file goes to corrupt/.  Before a
    message leaves active/, the bounce(8), defer and trace services send
    its notices: non-delivery (bounce/ID), success and verification
    (trace/ID), expiry after maximal_queue_lifetime and delay warnings
    (defer/ID).  Messages in hold/ are never scheduled.

    An address probe of verify(8) (A trace_flags with DEL_REQ_FLAG_MTA_VRFY)
    goes to the agents in verify-only mode; each result (deliverable, or
    undeliverable with the bounce or deferral reason) goes to the verify
    service as an update, and the probe leaves the queue without any
    notice, whatever happened to it.

    A message with a content filter (REC_FILT "transport:nexthop", from
    content_filter or a FILTER action) goes to that transport for every
    recipient; a REDIRECT (REC_RDR) replaces all its recipients.

TRIGGERS (public/qmgr, pfy.ipc.trigger)
    I, W   scan incoming/         D   scan deferred/ (due files)
    A      scan all of deferred/  F   forget dead destinations
    {site S}  deliver deferred mail for S now (postqueue -s)
    {id ID}   deliver deferred message ID now (postqueue -i)
    Also a timer scans deferred/ every queue_run_delay.

SECURITY
    Not security sensitive: it reads queue files cleanup wrote and talks to
    local daemons only.  Runs as mail_owner, not chrooted (master.cf n).
    A compromise could delay, re-route or delete queued mail.

PARAMETERS
    qmgr_message_active_limit, qmgr_message_recipient_limit,
    queue_run_delay, minimal_backoff_time, maximal_backoff_time,
    maximal_queue_lifetime, bounce_queue_lifetime, default_filter_nexthop,
    bounce_service_name, defer_service_name, trace_service_name, qmgr_ipc_timeout,
    address_verify_service_name,
    default_process_limit, and per transport (transport_ prefix or
    default_): destination_concurrency_limit, initial_destination_concurrency,
    destination_recipient_limit, destination_concurrency_failed_cohort_limit,
    destination_concurrency_positive_feedback / negative_feedback.
"""

from __future__ import annotations

import os
import time

__all__ = ["main"]


def _master_services(cfg) -> list:
    try:
        from pfy.config.master_cf import parse_master_cf
        return parse_master_cf(os.path.join(cfg.config_directory, "master.cf"), strict=False)
    except Exception:   # noqa: BLE001 - no master.cf: defaults everywhere
        return []


def _process_limits(cfg, entries=None) -> dict[str, int]:
    """maxproc of each unix service in master.cf: a transport never has more
    deliveries in flight than processes master will run for it."""
    limits: dict[str, int] = {}
    for e in _master_services(cfg) if entries is None else entries:
        if e.type == "unix":
            # "-" (None) is default_process_limit; 0 means no limit.
            limits[e.service] = (cfg.default_process_limit if e.maxproc is None
                                 else e.maxproc or 1 << 30)
    return limits


def _agent_commands(entries) -> dict[str, str]:
    """master.cf service name -> command (local, smtp, pipe...), to know
    which agent a transport reaches (trace-only requests)."""
    return {e.service: os.path.basename(e.command) for e in entries if e.type == "unix"}


def make_resolver(root: str):
    """trivial-rewrite's resolve over private/rewrite (the client caches)."""
    from pfy.daemons.qmgr.active import Resolved, ResolveError
    from pfy.ipc.rewrite_client import RewriteClient, RewriteUnavailable

    client = RewriteClient(os.path.join(root, "private", "rewrite"))

    def resolve(sender: str, address: str) -> Resolved:
        try:
            r = client.resolve(sender, address)
        except RewriteUnavailable as exc:
            raise ResolveError(f"address resolver failure: {exc}") from None
        if r.failed:
            raise ResolveError("address resolver failure")
        return Resolved(r.transport, r.nexthop, r.recipient)

    def resolve_nowait(sender: str, address: str) -> Resolved | None:
        r = client.resolve_nowait(sender, address)
        return None if r is None else Resolved(r.transport, r.nexthop, r.recipient)
    resolve.nowait = resolve_nowait
    return resolve


def _preload(ctx) -> None:
    """Everything qmgr will import, loaded while we can still read it: the
    interpreter's and pfy's files may be unreadable to mail_owner (a
    Python under /root), and are outside the jail if master.cf says "y"."""
    import concurrent.futures.thread  # noqa: F401 - run_in_executor's pool
    import pfy.daemons.qmgr.active  # noqa: F401
    import pfy.daemons.qmgr.scheduler  # noqa: F401
    import pfy.dsn.logfile  # noqa: F401
    import pfy.ipc.bounce_client  # noqa: F401
    import pfy.ipc.verify_client  # noqa: F401
    import pfy.ipc.channel  # noqa: F401
    import pfy.ipc.rewrite_client  # noqa: F401
    import pfy.ipc.trigger  # noqa: F401
    import pfy.queue.directory  # noqa: F401
    entries = _master_services(ctx.cfg)
    ctx.data["maxproc"] = _process_limits(ctx.cfg, entries)
    ctx.data["commands"] = _agent_commands(entries)


def _setup(ctx) -> None:
    from pfy.daemons.qmgr.active import ActiveQueue, RetryPolicy
    from pfy.daemons.qmgr.scheduler import Scheduler, TransportLimits
    from pfy.ipc.bounce_client import BounceClient
    from pfy.ipc.delivery import VERIFY_AGENTS
    from pfy.ipc.verify_client import VerifyClient
    from pfy.queue.directory import Queue

    cfg = ctx.cfg
    maxproc = ctx.data.get("maxproc") or _process_limits(cfg)
    limits: dict[str, TransportLimits] = {}

    def limits_for(transport: str) -> TransportLimits:
        if transport not in limits:
            limits[transport] = TransportLimits.from_config(cfg, transport, maxproc.get(transport))
        return limits[transport]

    root = ctx.queue_directory
    commands = ctx.data.get("commands")
    if commands is None:
        commands = _agent_commands(_master_services(cfg))

    def verify_ok(transport: str) -> bool:
        return commands.get(transport, transport) in VERIFY_AGENTS

    queue = Queue(root, hash_queue_depth=cfg.hash_queue_depth,
                  hash_queue_names=cfg.hash_queue_names,
                  long_ids=cfg.enable_long_queue_ids)
    engine = ActiveQueue(
        queue, Scheduler(limits_for), ctx.data.get("resolver") or make_resolver(root),
        lambda transport: os.path.join(root, "private", transport),
        active_limit=cfg.qmgr_message_active_limit,
        recipient_limit=cfg.qmgr_message_recipient_limit,
        retry=RetryPolicy.from_config(cfg), ipc_timeout=cfg.qmgr_ipc_timeout,
        bounce=BounceClient.from_config(cfg, root),
        default_filter_nexthop=cfg.default_filter_nexthop, verify_ok=verify_ok,
        verify=VerifyClient(os.path.join(root, "private", cfg.address_verify_service_name),
                            timeout=cfg.qmgr_ipc_timeout))
    try:
        engine.recover()
    except PermissionError as exc:
        # Seen when a folder above queue_directory is not traversable by
        # mail_owner (e.g. a test instance under a 0700 /tmp/pytest-of-root):
        # say so in one line instead of a panic traceback.
        from pfy.server.lifecycle import Fatal
        raise Fatal(f"scan active queue: {exc}; queue_directory and every folder "
                    f"above it must be searchable by mail_owner") from None
    ctx.data["engine"] = engine
    if not ctx.options.standalone:
        _wake_self(b"D")


def _wake_self(request: bytes) -> None:
    """Queue a wake-up for ourselves, so the first pass of the serve loop
    scans incoming/ and deferred/ as Postfix's qmgr does at start
    (QMGR_SCAN_START): the skeleton has no "loop started" hook.

    Works for every type master.cf may give qmgr (Postfix 3.x ships it as
    "unix", older ones as "fifo"): a byte written into our own FIFO, or a
    connection to our own listening socket, which sits in the backlog
    until the loop accepts it.  Without this, mail left in incoming/ (or
    put back from active/ by recover()) would wait for master's 300 s
    wake-up timer."""
    import socket
    from pfy.server import master_proto
    from pfy.server.lifecycle import fd_kind
    fd = master_proto.LISTEN_FD
    try:
        kind = fd_kind(fd)
        if kind == "fifo":
            os.write(fd, request)
        elif kind == "stream":
            lsock = socket.socket(fileno=os.dup(fd))
            try:
                addr, family = lsock.getsockname(), lsock.family
            finally:
                lsock.close()
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(addr)
                s.sendall(request)
    except OSError as exc:
        from pfy import log
        log.warning(f"cannot schedule the start-up queue scan: {exc}")


def on_trigger(ctx, request: bytes) -> None:
    from pfy.ipc.trigger import parse_qmgr_request
    engine = ctx.data["engine"]
    if not ctx.data.get("timer"):
        _arm_timer(ctx)
    req = parse_qmgr_request(request)
    if b"F" in req.codes:
        engine.sched.flush_dead()
    if req.ids:
        engine.flush_ids(req.ids)
    if req.sites:
        engine._spawn(engine.flush_sites(req.sites))
    engine.request_scan(deferred=b"D" in req.codes, all_deferred=b"A" in req.codes)


def _arm_timer(ctx) -> None:
    def tick():
        ctx.data["engine"].request_scan(deferred=True)
        ctx.data["timer"] = ctx.call_later(ctx.cfg.queue_run_delay, tick)
    ctx.data["timer"] = ctx.call_later(ctx.cfg.queue_run_delay, tick)


def main() -> None:
    from pfy.server import trigger
    trigger.serve(on_trigger, pre_jail=_preload, post_jail=_setup, solitary=True, unlimited=True,
                  program="qmgr")
