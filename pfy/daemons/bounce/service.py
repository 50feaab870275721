"""The work of bounce(8): append to logfiles, send notices.

One BounceService per process, made in pre_jail (templates are read
before chroot); handle() serves one request and returns 0 (done) or 1
(try again later), as Postfix's bounce services return to their clients.

Who gets a notice (bounce_notify_service.c, bounce_warn_service.c,
bounce_trace_service.c, bounce_one_service.c):

    original sender      notice goes to          from                    template
    ordinary address     the sender              <> (null sender)        failure/delay/success/verify
    <> (a bounce)        2bounce_notice_recipient double_bounce_sender  postmaster copy, when
                         (delay_notice_recipient for warnings)           notify_classes allows
    double-bounce@host   nobody: "undeliverable postmaster notification discarded"

so a notice never goes to the null sender and never loops: a failed
bounce becomes at most one double bounce, and a failed double bounce is
dropped with a log line.  Postmaster copies (headers only) follow
notify_classes: "bounce" for non-delivery, "delay" for warnings.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from pfy import log
from pfy.daemons.cleanup.core import FLAG_MAP_OK
from pfy.dsn.logfile import (NOTIFY_DELAY, NOTIFY_FAILURE, RET_FULL, RET_HDRS, StatusRecord,
                             append_records, read_records)
from pfy.dsn.report import (NOTIFY_OVERRIDE, OriginalMessage, ReportSettings, compose,
                            select_records)
from pfy.dsn.templates import Template, expand_text, lookup_from_config
from pfy.ipc.bounce_client import (FLAG_DELRCPT, FLAG_RECORD, FLAG_USR_VRFY, FLUSH, LOGFILES,
                                   ONE, TRACE, WARN, BounceAppend, BounceNotify, NoticeRequest)
from pfy.ipc.cleanup_client import CleanupClient, CleanupRejected
from pfy.queue.queue_file import CorruptQueueFile, mark_done

__all__ = ["BounceService", "logfile_of_service"]

# post_mail.c: a notice is an internal submission: address mapping yes
# (postmaster may be an alias), header/body checks and BCC no.
CLEANUP_FLAGS = FLAG_MAP_OK


def logfile_of_service(service: str, cfg) -> str:
    """The logfile folder a master.cf service works on: bounce(8) runs as
    the bounce, defer and trace services, one folder each."""
    if service in LOGFILES:
        return service
    for name in LOGFILES:
        if service == cfg[f"{name}_service_name"]:
            return name
    raise ValueError(f"unknown bounce service name: {service}")


class _Submission:
    """A cleanup connection that becomes a queue file at finish()."""

    def __init__(self, client: CleanupClient):
        self.client = client
        self.queue_id = client.queue_id

    def line(self, data: bytes) -> None:
        self.client.line(data)

    def record(self, rtype: int, data: bytes) -> None:
        self.client.record(rtype, data)


class BounceService:
    def __init__(self, cfg, queue, templates: dict[str, Template], logfile: str,
                 cleanup_path: str, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.queue = queue
        self.templates = templates
        self.logfile = logfile
        self.cleanup_path = cleanup_path
        self.clock = clock
        self.lookup = lookup_from_config(cfg)
        self.notify_classes = {c.lower() for c in cfg.notify_classes}
        self.myhostname = cfg.myhostname
        # mail_addr_double_bounce(): the sender of postmaster notices, on
        # this host, so replies to it can be recognized and dropped.
        self.double_bounce = f"{cfg.double_bounce_sender}@{cfg.myhostname}"
        self.settings = ReportSettings(
            myhostname=cfg.myhostname, mail_name=cfg.mail_name,
            bounce_size_limit=cfg.bounce_size_limit,
            maximal_queue_lifetime=cfg.maximal_queue_lifetime)
        self.threaded = cfg.enable_threaded_bounces

    def _param(self, name: str) -> str:
        # Read as text: delay_notice_recipient is mis-typed in the registry.
        return self.cfg.expand(self.cfg.raw_or_default(name))

    # -- requests ------------------------------------------------------------
    def handle(self, req) -> int:
        if isinstance(req, BounceAppend):
            return self.append(req.queue_id, req.records)
        if isinstance(req, BounceNotify):
            return self.notify(req.kind, req.msg, req.records)
        return 1

    def append(self, queue_id: str, records: list[StatusRecord]) -> int:
        """bounce_append_service(): the record is durable before we say so."""
        try:
            append_records(self.queue.log_path(self.logfile, _safe_id(queue_id)), records,
                           fsync=True)
        except (OSError, ValueError) as exc:
            log.warning(f"{queue_id}: append {self.logfile} logfile: {exc}")
            return 1
        return 0

    def notify(self, kind: str, msg: NoticeRequest, records: list[StatusRecord]) -> int:
        try:
            _safe_id(msg.queue_id)
        except ValueError as exc:
            log.warning(str(exc))
            return 1
        if kind == FLUSH:
            return self._failure(msg, self.logfile, None)
        if kind == ONE:
            return self._failure(msg, None, records)
        if kind == WARN:
            return self._warn(msg)
        if kind == TRACE:
            return self._trace(msg)
        log.warning(f"{msg.queue_id}: unknown bounce request {kind!r}")
        return 1

    # -- the three notice kinds ----------------------------------------------
    def _failure(self, msg: NoticeRequest, logfile: str | None,
                 given: list[StatusRecord] | None) -> int:
        """Non-delivery report (bounce flush, defer flush, bounce one)."""
        qid, sender = msg.queue_id, msg.sender
        tmpl = self.templates["failure"]
        records, unavailable = self._records(logfile, given, qid)
        status = 1
        if sender.lower() == self.double_bounce.lower():
            log.warning(f"{qid}: undeliverable postmaster notification discarded")
            status = 0
        elif sender == "":
            if not self.notify_classes & {"bounce", "2bounce"}:
                status = 0
            else:
                status = self._send(msg, tmpl, records, unavailable, self.double_bounce,
                                    self._param("2bounce_notice_recipient"), postmaster=True,
                                    notify=NOTIFY_OVERRIDE, ret=RET_FULL,
                                    what="postmaster non-delivery notification")
        else:
            status = self._send(msg, tmpl, records, unavailable, "", sender,
                                postmaster=False, notify=NOTIFY_FAILURE,
                                ret=msg.ret or RET_FULL,
                                what="sender non-delivery notification")
            if status == 0 and "bounce" in self.notify_classes:
                pm = self._send(msg, tmpl, records, unavailable, self.double_bounce,
                                self._param("bounce_notice_recipient"), postmaster=True,
                                notify=NOTIFY_OVERRIDE, ret=RET_HDRS,
                                what="postmaster non-delivery notification")
                if pm:
                    log.warning(f"{qid}: postmaster notice failed while bouncing to {sender}")
        if status == 0:
            if msg.flags & FLAG_DELRCPT:
                self._mark_done(msg, records)
            if logfile is not None:
                self._remove_log(logfile, qid)
        return status

    def _warn(self, msg: NoticeRequest) -> int:
        """Delay warning from the defer log, which stays for mailq and the
        next attempt."""
        qid, sender = msg.queue_id, msg.sender
        tmpl = self.templates["delay"]
        records, unavailable = self._records("defer", None, qid)
        delay_rcpt = self._param("delay_notice_recipient")
        if sender.lower() == self.double_bounce.lower():
            log.warning(f"{qid}: undeliverable postmaster notification discarded")
            return 0
        if sender == "":
            if "delay" not in self.notify_classes:
                return 0
            return self._send(msg, tmpl, records, unavailable, self.double_bounce, delay_rcpt,
                              postmaster=True, notify=NOTIFY_OVERRIDE, ret=RET_FULL,
                              what="postmaster delay notification")
        status = self._send(msg, tmpl, records, unavailable, "", sender, postmaster=False,
                            notify=NOTIFY_DELAY, ret=RET_HDRS,
                            what="sender delay notification")
        if status == 0 and "delay" in self.notify_classes:
            if self._send(msg, tmpl, records, unavailable, self.double_bounce, delay_rcpt,
                          postmaster=True, notify=NOTIFY_OVERRIDE, ret=RET_HDRS,
                          what="postmaster delay notification"):
                log.warning(f"{qid}: postmaster notice failed while warning {sender}")
        return status

    def _trace(self, msg: NoticeRequest) -> int:
        """Success (NOTIFY=SUCCESS) or verify (sendmail -bv/-v) report."""
        qid, sender = msg.queue_id, msg.sender
        if sender.lower() == self.double_bounce.lower():
            log.info(f"{qid}: not sending trace/success notification for "
                     "double-bounce message")
            # Deliberately unlike Postfix, which leaves the trace file
            # behind here: nothing will ever read it, so it goes.
            self._remove_log("trace", qid)
            return 0
        from_, to = "", sender
        if sender == "":
            if "2bounce" not in self.notify_classes:
                log.info(f"{qid}: not sending trace/success notification "
                         "for single-bounce message")
                self._remove_log("trace", qid)
                return 0
            from_, to = self.double_bounce, self._param("2bounce_notice_recipient")
        records, unavailable = self._records("trace", None, qid)
        if unavailable:
            # A partial delivery may leave no trace file: nothing to report.
            log.debug(f"{qid}: no trace file -- not sending a notification")
            return 0
        verify = msg.flags & (FLAG_USR_VRFY | FLAG_RECORD)
        tmpl = self.templates["verify" if verify else "success"]
        status = self._send(msg, tmpl, records, False, from_, to, postmaster=False,
                            notify=NOTIFY_OVERRIDE, ret=RET_HDRS,
                            what="sender delivery status notification")
        if status == 0:
            self._remove_log("trace", qid)
        return status

    # -- helpers ---------------------------------------------------------------
    def _records(self, logfile: str | None, given: list[StatusRecord] | None,
                 qid: str) -> tuple[list[StatusRecord], bool]:
        """The log's records (small: one block per recipient), and whether
        the log was unreadable.  Records given in a request (bounce_one)
        arrive in internal form and are quoted like a logfile's."""
        if logfile is None:
            from pfy.smtp.address import quote_local
            out = []
            for r in given or []:
                out.append(StatusRecord(**{**r.__dict__,
                                           "recipient": quote_local(r.recipient),
                                           "orig_rcpt": quote_local(r.orig_rcpt)
                                           if r.orig_rcpt else ""}))
            return out, False
        path = self.queue.log_path(logfile, qid)
        try:
            return list(read_records(path)), False
        except FileNotFoundError:
            return [], True
        except OSError as exc:
            log.warning(f"{qid}: read {logfile} logfile: {exc}")
            return [], True

    def _send(self, msg: NoticeRequest, tmpl: Template, records: list[StatusRecord],
              unavailable: bool, from_: str, to: str, *, postmaster: bool, notify: int,
              ret: int, what: str) -> int:
        """Compose and queue one notice; 0 when queued or when no recipient
        of the log wants it (the notice is cancelled, as Postfix does)."""
        chosen = select_records(records, notify)
        if not chosen and not (unavailable and tmpl.is_failure):
            return 0
        try:
            text = expand_text(tmpl, self.lookup) if not postmaster else []
            with self._original(msg) as original:
                with CleanupClient.open(self.cleanup_path, CLEANUP_FLAGS,
                                        timeout=self.cfg.ipc_timeout) as c:
                    c.envelope(from_, [to], attrs={"rewrite_context": "local"},
                               arrival=self.clock())
                    sub = _Submission(c)
                    self._received(sub, c.queue_id)
                    compose(sub, template=tmpl, text=text, msg=original, records=chosen,
                            to=to, settings=self.settings, postmaster_copy=postmaster,
                            boilerplate=not postmaster, ret=ret,
                            log_unavailable=unavailable, now=self.clock())
                    new_id = c.finish()
        except CleanupRejected as exc:
            log.warning(f"{msg.queue_id}: {what} rejected by cleanup: {exc.reason}")
            return 1
        except (OSError, EOFError, ValueError, CorruptQueueFile) as exc:
            log.warning(f"{msg.queue_id}: cannot send {what}: {exc}")
            return 1
        log.log_queue_id_line(msg.queue_id, f"{what}: {new_id}")
        return 0

    def _received(self, sub: _Submission, new_id: str) -> None:
        """post_mail_init(): the notice's own Received: header."""
        from pfy.dsn.report import mail_date
        sub.line(f"Received: by {self.myhostname} ({self.cfg.mail_name})".encode())
        sub.line(f"\tid {new_id}; {mail_date(self.clock())}".encode())

    @contextmanager
    def _original(self, msg: NoticeRequest) -> Iterator[OriginalMessage]:
        """The message a notice is about, its content streamed on demand.
        A queue file that is gone is not an error: the notice says
        "--- Undelivered message unavailable ---" (bounce_mail_alloc)."""
        info = OriginalMessage(queue_id=msg.queue_id, sender=msg.sender, arrival_time=0,
                               encoding=msg.encoding, smtputf8=msg.smtputf8,
                               envid=msg.envid)
        try:
            reader = self.queue.open(self.queue.entry(msg.queue_name, msg.queue_id))
        except FileNotFoundError:
            yield info
            return
        with reader:
            env = reader.read_envelope()
            info.arrival_time = env.arrival_time
            info.message_size = env.content_size
            info.sender = env.sender
            info.content = reader.content_records
            if self.threaded:
                info.message_id = _message_id(reader)
            yield info

    def _mark_done(self, msg: NoticeRequest, records: list[StatusRecord]) -> None:
        """bounce_delrcpt(): the reported recipients are settled."""
        try:
            fd = os.open(self.queue.path(msg.queue_name, msg.queue_id), os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        try:
            for r in records:
                if r.offset > 0:
                    mark_done(fd, r.offset)
        except (OSError, CorruptQueueFile) as exc:
            log.warning(f"{msg.queue_id}: cannot mark recipient done: {exc}")
        finally:
            os.close(fd)

    def _remove_log(self, logfile: str, queue_id: str) -> None:
        try:
            os.unlink(self.queue.log_path(logfile, queue_id))
        except FileNotFoundError:
            pass


def _safe_id(queue_id: str) -> str:
    # A queue ID names a file: no path separators or dot-files from a client.
    from pfy.queue.queue_id import is_queue_id
    if not is_queue_id(queue_id):
        raise ValueError(f"malformed queue id: {queue_id!r}")
    return queue_id


def _message_id(reader) -> str:
    """The original's Message-ID (for References:), from its headers."""
    for line in reader.content_lines():
        if not line or line[:1] not in b" \t" and b":" not in line:
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"message-id":
            v = value.strip().decode("utf-8", "surrogateescape")
            if v.startswith("<") and v.endswith(">"):
                return v
            return ""
    return ""
