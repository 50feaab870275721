"""Postfix-compatible logging: one line format, one function per kind of line.

LINE FORMAT (Postfix's msg_logger.c, so pflogsumm and friends work)
    Nov 22 10:15:01 host postfix/smtpd[4242]: 3F2A81C0B1: client=...
    ^ "%b %d %H:%M:%S", host = first label of myhostname, then
    syslog_name/process[pid]: and, for all but info, "warning: ",
    "error: ", "fatal: " or "panic: " added here, never by callers.
    Text is cut at 2000 characters (MSG_LOGGER_RECLEN) and every
    unprintable character becomes '?' (Postfix's printable(); valid
    UTF-8 is kept, as with smtputf8_enable = yes), so a client cannot
    forge log lines with CR/LF or escape sequences.

WHERE LINES GO
    maillog_file empty: syslog, RFC 3164 datagrams to /dev/log with facility
      syslog_facility (the socket is connected at init_logging(), before
      chroot, and kept; syslogd adds the host name).
    maillog_file set: appended to the file.  The file is opened at
      init_logging(), before chroot and privilege drop, with O_APPEND, and
      kept open: every line is one write(2), which Linux applies atomically
      at the end of file, so many processes never interleave or clobber
      each other's lines.  A process that cannot open the file (an ordinary
      user's sendmail when the file belongs to root) sends the formatted
      line as one datagram to queue_directory/public/postlog (Postfix's
      postlog service, unix-dgram) if that socket exists, else writes it to
      stderr.  /dev/stdout works as in Postfix (postfix start-fg).
    stderr (commands): "progname: severity: text", also when the sink is
      a file or syslog, if ``stderr=True`` (Postfix's msg_vstream for
      interactive commands).

SEVERITIES
    info, warning, error (Postfix stops after 13 errors: the caller decides),
    fatal (logs, exits 1), panic (logs, exits 2: Postfix aborts; master
    restarts and throttles the service either way).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import NoReturn

__all__ = [
    "logger", "init_logging", "Logger", "printable", "format_delay",
    "format_line", "info", "warning", "error", "fatal", "panic",
    "log_connect", "log_disconnect", "log_client", "log_queue_id_line",
    "log_message_id", "log_pickup", "log_qmgr_from", "log_removed",
    "log_expired", "log_delivery", "log_reject", "log_noqueue_reject",
    "FACILITIES",
]

# Postfix msg_logger.c MSG_LOGGER_RECLEN: longest text per line.
MAX_TEXT = 2000
# syslog(3) facility codes (<syslog.h>), by syslog.conf(5) name.
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
    "lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}
_SEVERITY = {"info": 6, "warning": 4, "error": 3, "fatal": 2, "panic": 0}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
           "Oct", "Nov", "Dec")


def _make_printable_table() -> dict[int, str]:
    # C0 controls, DEL and C1 controls are not printable (ISPRINT fails);
    # lone surrogates are bytes that were not valid UTF-8.
    table = {c: "?" for c in range(0x20)}
    table[0x7F] = "?"
    table.update({c: "?" for c in range(0x80, 0xA0)})
    return table


_PRINTABLE = _make_printable_table()


def printable(text: str) -> str:
    """Postfix's printable(): unprintable characters become '?'."""
    if text.isprintable() and text.isascii():
        return text
    out = text.translate(_PRINTABLE)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in out):
        out = "".join("?" if 0xD800 <= ord(c) <= 0xDFFF else c for c in out)
    return out


def format_delay(seconds: float, sig_digits: int = 2, max_digits: int = 2) -> str:
    """Postfix's format_tv(): ``delay=`` values.

    Large values are rounded to whole seconds, small ones keep two
    significant digits but never more decimals than ``max_digits``
    (delay_logging_resolution_limit, default 2): 0.4, 0.02, 0, 1.2, 12.
    """
    if seconds < 0:
        seconds = 0.0
    sec = int(seconds)
    usec = int(round((seconds - sec) * 1_000_000))
    if usec >= 1_000_000:
        sec, usec = sec + 1, usec - 1_000_000
    return _format_tv(sec, usec, sig_digits, max_digits)


def _format_tv(sec: int, usec: int, sig_dig: int, max_dig: int) -> str:
    million = 1_000_000
    ures = million // 10 ** max_dig
    wid = 10 ** sig_dig
    if ures < million:
        if sec > 0:
            n = 1
            while sec >= n and n <= wid // 10:
                n *= 10
            ures = (million // wid) * n
        else:
            while usec >= wid * ures:
                ures *= 10
    if ures > 1:
        usec += ures // 2
        if usec >= million:
            sec += 1
            usec -= million
    out = str(sec)
    if usec >= ures:
        digits = []
        rem, n = usec, million // 10
        while rem >= ures and n > 0:
            digits.append("0123456789"[rem // n])
            rem %= n
            n //= 10
        out += "." + "".join(digits)
    return out


def _timestamp(now: float) -> str:
    t = time.localtime(now)
    return "%s %02d %02d:%02d:%02d" % (_MONTHS[t.tm_mon - 1], t.tm_mday,
                                       t.tm_hour, t.tm_min, t.tm_sec)


def format_line(text: str, severity: str, tag: str, pid: int, host: str,
                now: float) -> str:
    """One maillog_file line, without the newline (msg_logger_print())."""
    body = printable(text[:MAX_TEXT])
    if severity != "info":
        body = f"{severity}: {body}"
    return f"{_timestamp(now)} {host.split('.', 1)[0]} {tag}[{pid}]: {body}"


class Logger:
    """The process's logger; the module-level ``logger`` is the one to use."""

    @property
    def echoes_to_stderr(self) -> bool:
        """True when lines already reach stderr (no log yet, or a command's
        own echo), so a caller need not print a fatal there a second time."""
        return self._stderr or self._stderr_only

    def __init__(self):
        self.process_name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "pfy"
        self.syslog_name = "postfix"
        self.tag = f"{self.syslog_name}/{self.process_name}"
        self.host = socket.gethostname()
        self.facility = FACILITIES["mail"]
        self.verbose = 0
        self._file_fd = -1
        self._syslog: socket.socket | None = None
        self._postlog: socket.socket | None = None
        self._stderr = True           # until init_logging says otherwise
        self._stderr_only = True
        self.clock = time.time

    # -- configuration --------------------------------------------------------
    def init(self, process_name: str, syslog_name: str = "postfix",
             syslog_facility: str = "mail", maillog_file: str = "",
             hostname: str | None = None, stderr: bool = False,
             postlog_socket: str | None = None, syslog_socket: str = "/dev/log",
             verbose: int = 0) -> None:
        """See init_logging()."""
        self.close()
        self.process_name = process_name
        self.syslog_name = syslog_name
        self.tag = f"{syslog_name}/{process_name}" if syslog_name else process_name
        if hostname:
            self.host = hostname
        if syslog_facility not in FACILITIES:
            self._stderr = True
            self._stderr_only = True
            self.fatal(f"unknown syslog_facility: {syslog_facility}")
        self.facility = FACILITIES[syslog_facility]
        self.verbose = verbose
        self._stderr = stderr
        self._stderr_only = False
        if maillog_file:
            try:
                self._file_fd = os.open(
                    maillog_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                    0o600)
            except OSError as err:
                self._file_fd = -1
                if postlog_socket and os.path.exists(postlog_socket):
                    self._postlog = _dgram(postlog_socket)
                if self._postlog is None:
                    self._stderr_only = True
                    self._stderr = True
                    if os.environ.get("PFY_LOG_QUIET_FALLBACK") is None:
                        sys.stderr.write(f"{process_name}: warning: open {maillog_file}: "
                                         f"{err.strerror}; logging to stderr\n")
        else:
            self._syslog = _dgram(syslog_socket)
            if self._syslog is None:
                self._stderr = True

    @property
    def writes_file(self) -> bool:
        """maillog_file is open for this process (postlogd needs it)."""
        return self._file_fd >= 0

    def write_line(self, line: str) -> None:
        """Append one line formatted elsewhere (postlogd: a record from a
        process that could not open maillog_file) as it is; the caller
        made it one printable line."""
        if self._file_fd >= 0:
            try:
                os.write(self._file_fd, (line + "\n").encode("utf-8", "surrogateescape"))
            except OSError:
                pass

    def close(self) -> None:
        if self._file_fd >= 0:
            os.close(self._file_fd)
            self._file_fd = -1
        for s in (self._syslog, self._postlog):
            if s is not None:
                s.close()
        self._syslog = self._postlog = None
        self._stderr_only = True     # never silent: until re-init, stderr

    # -- output ---------------------------------------------------------------
    def log(self, severity: str, text: str) -> None:
        now = self.clock()
        pid = os.getpid()
        if self._stderr or self._stderr_only:
            body = printable(text[:MAX_TEXT])
            prefix = "" if severity == "info" else f"{severity}: "
            try:
                sys.stderr.write(f"{self.process_name}: {prefix}{body}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        if self._stderr_only:
            return
        if self._file_fd >= 0 or self._postlog is not None:
            line = format_line(text, severity, self.tag, pid, self.host, now)
            data = (line + "\n").encode("utf-8", "surrogateescape")
            try:
                if self._file_fd >= 0:
                    os.write(self._file_fd, data)
                else:
                    self._postlog.send(data)
            except OSError:
                pass
        elif self._syslog is not None:
            body = printable(text[:MAX_TEXT])
            if severity != "info":
                body = f"{severity}: {body}"
            pri = self.facility * 8 + _SEVERITY[severity]
            msg = f"<{pri}>{_timestamp_syslog(now)} {self.tag}[{pid}]: {body}"
            try:
                self._syslog.send(msg.encode("utf-8", "surrogateescape"))
            except OSError:
                pass

    def info(self, text: str, *args) -> None:
        self.log("info", text % args if args else text)

    def debug(self, text: str, level: int = 1) -> None:
        """Postfix's msg_verbose lines: info level, only with -v."""
        if self.verbose >= level:
            self.log("info", text)

    def warning(self, text: str, *args) -> None:
        self.log("warning", text % args if args else text)

    def error(self, text: str, *args) -> None:
        self.log("error", text % args if args else text)

    def critical(self, text: str, *args) -> None:
        """A "fatal:" line without exiting, for callers that exit themselves
        (and for stdlib-logging-shaped callers)."""
        self.log("fatal", text % args if args else text)

    def fatal(self, text: str) -> NoReturn:
        """Log and exit 1: bad configuration or environment."""
        self.log("fatal", text)
        raise SystemExit(1)

    def panic(self, text: str) -> NoReturn:
        """Log (with the traceback of the exception being handled, if any)
        and exit 2: a bug."""
        exc = sys.exc_info()[1]
        if exc is not None:
            import traceback
            for line in "".join(traceback.format_exception(exc)).splitlines():
                self.log("panic", line)
        self.log("panic", text)
        raise SystemExit(2)


def _timestamp_syslog(now: float) -> str:
    # RFC 3164 4.1.2: day of month space-padded ("Nov  2").
    t = time.localtime(now)
    return "%s %2d %02d:%02d:%02d" % (_MONTHS[t.tm_mon - 1], t.tm_mday,
                                      t.tm_hour, t.tm_min, t.tm_sec)


def _dgram(path: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError:
        s.close()
        return None
    s.setblocking(False)        # a wedged syslogd must not stall mail
    return s


logger = Logger()
info = logger.info
warning = logger.warning
error = logger.error
fatal = logger.fatal
panic = logger.panic


def init_logging(process_name, program: str | None = None, *,
                 syslog_name: str = "postfix", syslog_facility: str = "mail",
                 maillog_file: str = "", hostname: str | None = None,
                 stderr: bool = False, postlog_socket: str | None = None,
                 syslog_socket: str = "/dev/log", verbose: int = 0) -> Logger:
    """Configure the process's logger; call before chroot (it opens files).

    Either plain values: init_logging("smtpd", syslog_name=..., ...), or a
    configuration object first: init_logging(cfg, "smtpd", verbose=1), which
    reads syslog_name, syslog_facility, maillog_file, myhostname and
    queue_directory/public/postlog_service_name from it (duck-typed, so
    this module does not import pfy.config).
    stderr: also print "process: severity: text" on stderr (commands).
    postlog_socket: used when maillog_file cannot be opened.
    Until this is called, everything goes to stderr only.
    """
    if not isinstance(process_name, str):
        cfg = process_name
        process_name = program or logger.process_name

        def get(name, default):
            try:
                value = getattr(cfg, name)
            except (AttributeError, KeyError):
                return default
            return default if value is None else value
        syslog_name = get("syslog_name", syslog_name)
        syslog_facility = get("syslog_facility", syslog_facility)
        maillog_file = get("maillog_file", maillog_file)
        hostname = get("myhostname", hostname)
        qdir = get("queue_directory", "")
        service = get("postlog_service_name", "postlog")
        if postlog_socket is None and qdir:
            postlog_socket = os.path.join(qdir, "public", service)
    logger.init(process_name, syslog_name, syslog_facility, maillog_file,
                hostname, stderr, postlog_socket, syslog_socket, verbose)
    if "logging" in sys.modules:
        _bridge_stdlib_logging()
    return logger


def _bridge_stdlib_logging() -> None:
    """Send records of stdlib loggers under "pfy" (library modules that use
    logging.getLogger) to this logger, with our severity words."""
    import logging

    class _Handler(logging.Handler):
        def emit(self, record):
            sev = ("info" if record.levelno < logging.WARNING else
                   "warning" if record.levelno < logging.ERROR else
                   "error" if record.levelno < logging.CRITICAL else "fatal")
            logger.log(sev, record.getMessage())

    root = logging.getLogger("pfy")
    if not any(type(h).__name__ == "_Handler" for h in root.handlers):
        root.addHandler(_Handler())
    root.setLevel(logging.INFO)
    root.propagate = False


# -- one function per kind of line --------------------------------------------
# Each returns nothing and logs one info line; tests pin the exact text
# through ``logger.clock`` and a maillog_file in a temp folder.

def log_connect(namaddr: str) -> None:
    """smtpd: ``connect from host[addr]``."""
    logger.info(f"connect from {namaddr}")


def log_disconnect(namaddr: str, stats: str = "") -> None:
    """smtpd: ``disconnect from host[addr] ehlo=1 mail=1 ... commands=5``."""
    logger.info(f"disconnect from {namaddr}" + (f" {stats}" if stats else ""))


def log_client(queue_id: str, namaddr: str, extra: str = "") -> None:
    """smtpd: ``ID: client=host[addr]`` (extra: ``, sasl_method=...``)."""
    logger.info(f"{queue_id}: client={namaddr}{extra}")


def log_queue_id_line(queue_id: str, text: str) -> None:
    """Any ``ID: text`` line (the queue ID, or NOQUEUE, first)."""
    logger.info(f"{queue_id}: {text}")


def log_message_id(queue_id: str, message_id: str, resent: bool = False) -> None:
    """cleanup: ``ID: message-id=<...>`` (``resent-message-id=`` for Resent-)."""
    name = "resent-message-id" if resent else "message-id"
    logger.info(f"{queue_id}: {name}={message_id}")


def log_pickup(queue_id: str, uid: int, sender: str, orig_id: str = "") -> None:
    """pickup: ``ID: uid=0 from=<root>``, plus `` orig_id=OLDID`` for a
    message requeued with postsuper -r (pickup.c MAIL_IS_REQUEUED)."""
    tail = f" orig_id={orig_id}" if orig_id else ""
    logger.info(f"{queue_id}: uid={uid} from=<{sender}>{tail}")


def log_qmgr_from(queue_id: str, sender: str, size: int, nrcpt: int,
                  queue: str = "active") -> None:
    """qmgr: ``ID: from=<a@x>, size=1042, nrcpt=1 (queue active)``."""
    logger.info(f"{queue_id}: from=<{sender}>, size={size}, nrcpt={nrcpt} (queue {queue})")


def log_removed(queue_id: str) -> None:
    """qmgr/postsuper: ``ID: removed``."""
    logger.info(f"{queue_id}: removed")


def log_expired(queue_id: str, sender: str) -> None:
    """qmgr: ``ID: from=<a@x>, status=expired, returned to sender``."""
    logger.info(f"{queue_id}: from=<{sender}>, status=expired, returned to sender")


def log_delivery(queue_id: str, to: str, orig_to: str, relay: str, delay: float,
                 delays: tuple[float, float, float, float], dsn: str, status: str,
                 reason: str, conn_use: int = 0) -> None:
    """Delivery agents: Postfix's log_adhoc() line.

    ``ID: to=<b@y>, orig_to=<B@y>, relay=local, delay=0.4,
    delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (delivered to mailbox)``.
    orig_to appears only when it differs from to (case-insensitively);
    conn_use only for a reused connection (count > 1).  delays are
    before-active, in-active, connection setup, transmission.
    """
    parts = [f"{queue_id}: to=<{to}>"]
    if orig_to and orig_to.lower() != to.lower():
        parts.append(f", orig_to=<{orig_to}>")
    parts.append(f", relay={relay}")
    if conn_use > 1:
        parts.append(f", conn_use={conn_use}")
    parts.append(f", delay={format_delay(delay)}, delays="
                 + "/".join(format_delay(d) for d in delays))
    parts.append(f", dsn={dsn}, status={status} ({reason})")
    logger.info("".join(parts))


def log_reject(queue_id: str, stage: str, namaddr: str, reply: str, sender: str,
               rcpt: str | None, proto: str, helo: str | None) -> None:
    """smtpd: ``ID: reject: RCPT from host[addr]: 554 5.7.1 <b@y>: Relay
    access denied; from=<a@x> to=<b@y> proto=ESMTP helo=<mx.example>``."""
    text = f"{queue_id}: reject: {stage} from {namaddr}: {reply}; from=<{sender}>"
    if rcpt is not None:
        text += f" to=<{rcpt}>"
    text += f" proto={proto}"
    if helo is not None:
        text += f" helo=<{helo}>"
    logger.info(text)


def log_noqueue_reject(stage: str, namaddr: str, reply: str, sender: str,
                       rcpt: str | None, proto: str, helo: str | None) -> None:
    """log_reject() before a queue file exists (queue ID ``NOQUEUE``)."""
    log_reject("NOQUEUE", stage, namaddr, reply, sender, rcpt, proto, helo)
