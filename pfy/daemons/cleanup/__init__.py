"""cleanup - canonicalize and enqueue mail.

SYNOPSIS
    cleanup [generic Postfix daemon options]

DESCRIPTION
    Accepts one message per client connection on public/cleanup over the
    cleanup_protocol (pfy/ipc/cleanup_client.py): the client sends its
    flags, gets the queue ID, streams Postfix's records (envelope, content,
    extracted information) and gets the verdict. The message is rewritten
    and checked as core.py describes, written to incoming/ as it streams
    (memory stays flat with message size), fsynced and renamed into place,
    and only then acknowledged; qmgr is woken through public/qmgr.

    Many clients are served at once (multi skeleton); the blocking work of
    one message (table lookups, rewrite requests, file writes, fsync) runs
    in a worker thread, records handed over in batches.

SECURITY
    Moderately sensitive: it reads mail from any local or remote sender and
    writes queue files. It runs chrooted as mail_owner and opens every table
    before the jail; header and body text are never interpreted, only
    matched.

PARAMETERS
    canonical_maps, sender_canonical_maps, recipient_canonical_maps and
    their _classes, masquerade_domains, masquerade_exceptions,
    masquerade_classes, virtual_alias_maps, virtual_alias_expansion_limit,
    virtual_alias_recursion_limit, always_bcc, sender_bcc_maps,
    recipient_bcc_maps, header_checks, mime_header_checks,
    nested_header_checks, body_checks, message_size_limit,
    header_size_limit, hopcount_limit, mime_nesting_limit,
    disable_mime_input_processing, undisclosed_recipients_header,
    always_add_missing_headers, header_from_format,
    enable_original_recipient, recipient_delimiter,
    propagate_unmatched_extensions, duplicate_filter_limit,
    remote_header_rewrite_domain, enable_long_queue_ids, delay_warning_time
    (the W record), myhostname, mydestination, inet_interfaces,
    proxy_interfaces (see postconf(5)).  Not content_filter: smtpd and
    pickup read it and send it here as a REC_FILT record.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from pfy.ipc.attr import ProtocolError
from pfy.ipc.channel import AsyncAttrConnection
from pfy.ipc.cleanup_client import PROTOCOL, CleanupOpen, CleanupQueueId, CleanupStatus
from pfy.queue.record import REC_END, REC_MESG

from .core import STAT_BAD, Cleanup, Settings, status_reply

__all__ = ["main", "settings_from_config", "serve_client"]

# Records, and bytes, handed to the worker thread at a time: enough to
# amortize the thread hop, small enough that memory does not grow with the
# message (a lines frame from smtpd holds up to a read's worth of lines).
BATCH = 256
BATCH_BYTES = 256 * 1024


def _classes(value) -> frozenset:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return frozenset(value)


def settings_from_config(cfg, open_maps) -> Settings:
    """open_maps(list of specs) -> search.Maps or None."""
    prop = _classes(cfg.propagate_unmatched_extensions)
    return Settings(
        myhostname=cfg.myhostname,
        canonical_maps=open_maps(cfg.canonical_maps),
        sender_canonical_maps=open_maps(cfg.sender_canonical_maps),
        recipient_canonical_maps=open_maps(cfg.recipient_canonical_maps),
        canonical_classes=_classes(cfg.canonical_classes),
        sender_canonical_classes=_classes(cfg.sender_canonical_classes),
        recipient_canonical_classes=_classes(cfg.recipient_canonical_classes),
        masquerade_domains=list(cfg.masquerade_domains),
        masquerade_exceptions=frozenset(x.lower() for x in cfg.masquerade_exceptions),
        masquerade_classes=_classes(cfg.masquerade_classes),
        virtual_alias_maps=open_maps(cfg.virtual_alias_maps),
        virtual_alias_expansion_limit=cfg.virtual_alias_expansion_limit,
        virtual_alias_recursion_limit=cfg.virtual_alias_recursion_limit,
        always_bcc=cfg.always_bcc,
        sender_bcc_maps=open_maps(cfg.sender_bcc_maps),
        recipient_bcc_maps=open_maps(cfg.recipient_bcc_maps),
        header_checks=open_maps(cfg.header_checks),
        mime_header_checks=open_maps(cfg.mime_header_checks),
        nested_header_checks=open_maps(cfg.nested_header_checks),
        body_checks=open_maps(cfg.body_checks),
        message_size_limit=cfg.message_size_limit,
        header_size_limit=cfg.header_size_limit,
        hopcount_limit=cfg.hopcount_limit,
        mime_nesting_limit=cfg.mime_nesting_limit,
        disable_mime_input_processing=cfg.disable_mime_input_processing,
        undisclosed_recipients_header=cfg.undisclosed_recipients_header,
        always_add_missing_headers=cfg.always_add_missing_headers,
        header_from_format=cfg.header_from_format,
        enable_original_recipient=cfg.enable_original_recipient,
        recipient_delimiter=cfg.recipient_delimiter,
        propagate_canonical="canonical" in prop,
        propagate_virtual="virtual" in prop,
        duplicate_filter_limit=cfg.duplicate_filter_limit,
        remote_header_rewrite_domain=cfg.remote_header_rewrite_domain,
        enable_long_queue_ids=cfg.enable_long_queue_ids,
        line_length_limit=cfg.line_length_limit,
        message_drop_headers=frozenset(h.lower() for h in _classes(cfg.message_drop_headers)),
        body_checks_size_limit=cfg.body_checks_size_limit,
        delay_warning_time=cfg.delay_warning_time,
    )


def _client_name(attrs: dict) -> str:
    name = attrs.get("log_client_name") or attrs.get("client_name")
    addr = attrs.get("log_client_address") or attrs.get("client_address")
    return f"{name or 'unknown'}[{addr}]" if addr else "local"


def peer_uid(writer) -> tuple[int, int] | None:
    """(uid, pid) of a Unix-domain peer, from the kernel (SO_PEERCRED);
    None for anything else."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid, pid


def trusted_uids(cfg) -> frozenset:
    """Who may talk to public/cleanup: root, mail_owner, and the user the
    instance runs as (an ordinary user's instance).  Everyone else goes
    through sendmail/postdrop and pickup, which stamps the real uid: a
    local user who could feed cleanup directly could forge a sender,
    client attributes and trusted records (DESIGN, Privileges)."""
    import pwd
    uids = {0, os.getuid()}
    try:
        uids.add(pwd.getpwnam(cfg.mail_owner).pw_uid)
    except KeyError:
        pass
    return frozenset(uids)


async def serve_client(svc: dict, reader, writer) -> None:
    """One message. svc: settings, queue, rewrite, is_local, log, wake,
    and "trusted": the uids allowed to connect (None: no check)."""
    loop = asyncio.get_running_loop()
    trusted = svc.get("trusted")
    if trusted is not None:
        peer = peer_uid(writer)
        if peer is not None and peer[0] not in trusted:
            svc["log"].warning(f"public/cleanup: refusing connection from uid {peer[0]} "
                               f"(pid {peer[1]}): not root, mail_owner or the instance "
                               "owner; local users submit with sendmail(1)")
            return
    conn = AsyncAttrConnection(reader, writer)
    conn.greet(PROTOCOL)
    await conn.flush()
    try:
        request = await conn.receive(CleanupOpen)
    except (EOFError, ProtocolError):
        return
    target = ["incoming"]
    queue = svc["queue"]
    from pfy.queue.queue_file import QueueFileWriter
    qwriter = QueueFileWriter(queue.dir("incoming"), lambda qid: queue.path(target[0], qid),
                              long_ids=queue.long_ids, fsync=queue.fsync)

    def hold() -> None:
        target[0] = "hold"

    core = Cleanup(svc["settings"], qwriter, rewrite=svc["rewrite"], is_local=svc["is_local"],
                   log=svc["log"], flags=request.flags, hold_target=hold)

    def feed_all(batch) -> None:
        for rtype, data in batch:
            core.feed(rtype, data)
        core.client = _client_name(core.attrs)

    content = False                 # an M record came: a message was under way
    try:
        conn.send(CleanupQueueId(qwriter.queue_id))
        await conn.flush()
        batch = []
        size = 0
        async for rec in conn.records():
            if rec[0] == REC_MESG:
                content = True
            batch.append(rec)
            size += len(rec[1])
            if len(batch) >= BATCH or size >= BATCH_BYTES:
                await loop.run_in_executor(None, feed_all, batch)
                batch = []
                size = 0
        batch.append((REC_END, b""))

        def feed_and_finish():
            feed_all(batch)
            return core.finish()
        # One hop to the worker for the last records and the fsync: most
        # messages fit in one batch, so this is their only hop.
        result = await loop.run_in_executor(None, feed_and_finish)
    except (EOFError, ProtocolError, ConnectionError) as err:
        # The client went away or broke the protocol: nothing was promised.
        # smtpd opens a session at the first RCPT and closes it on RSET or
        # QUIT without a message: that is no error (Postfix is silent).
        if content or not isinstance(err, (EOFError, ConnectionError)):
            svc["log"].warning(f"{qwriter.queue_id}: client disconnected or protocol error: {err}")
        qwriter.abort()
        return
    except BaseException:
        qwriter.abort()
        raise
    if result.status & STAT_BAD:
        svc["log"].warning(f"{result.queue_id}: {result.reason}")
    code = status_reply(result.status)[0]
    conn.send(CleanupStatus(result.status, result.queue_id, code, result.reason))
    await conn.flush()
    if not result.status and not result.discarded and not result.hold:
        svc["wake"]()


def main() -> None:
    from pfy.ipc.rewrite_client import RewriteClient
    from pfy.ipc.trigger import TRIGGER_WAKEUP, trigger
    from pfy.log import logger
    from pfy.message.domains import LocalDomains, MatchList
    from pfy.queue import Queue
    from pfy.server import multi
    from pfy.server.lifecycle import Fatal
    from pfy.tables import TableError, open_table
    from pfy.tables.search import Maps

    def pre_jail(ctx) -> None:
        # run_in_executor imports its thread pool on first use: after the
        # chroot that import fails (panic on the first message).
        import concurrent.futures.thread  # noqa: F401
        cfg = ctx.cfg
        tables: dict = {}

        def opener(spec):
            if spec not in tables:
                tables[spec] = open_table(spec, cfg)
            return tables[spec]

        def open_maps(specs):
            return Maps([opener(s) for s in specs]) if specs else None
        try:
            settings = settings_from_config(cfg, open_maps)
            local = LocalDomains(MatchList(cfg.mydestination, opener),
                                 cfg.inet_interfaces, cfg.proxy_interfaces)
        except TableError as err:
            raise Fatal(str(err)) from None
        ctx.data["pre"] = (settings, local, trusted_uids(cfg))

    def post_jail(ctx) -> None:
        settings, local, trusted = ctx.data["pre"]
        cfg = ctx.cfg
        root = ctx.queue_directory
        rw = RewriteClient(os.path.join(root, "private", "rewrite"))
        qmgr_path = os.path.join(root, "public", "qmgr")

        def is_local(domain: str) -> bool:
            # canonical(5)/virtual(5): $myorigin counts as local too.
            return domain.lower() == cfg.myorigin.lower() or local.is_local(domain)

        def wake() -> None:
            trigger(qmgr_path, TRIGGER_WAKEUP)

        ctx.data["svc"] = {
            "settings": settings,
            "queue": Queue(root, hash_queue_depth=cfg.hash_queue_depth,
                           hash_queue_names=tuple(cfg.hash_queue_names),
                           long_ids=cfg.enable_long_queue_ids),
            "rewrite": rw.rewrite, "is_local": is_local, "log": logger, "wake": wake,
            "trusted": trusted,
        }

    async def session(ctx, reader, writer) -> None:
        await serve_client(ctx.data["svc"], reader, writer)

    multi.serve(session, pre_jail=pre_jail, post_jail=post_jail)

