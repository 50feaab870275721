"""postdrop - put a message into the maildrop/ folder, and the maildrop file
format that sendmail(1), postdrop(1) and pickup(8) share.

THE PRIVILEGE BOUNDARY (DESIGN.md "Privileges"; postdrop(1) explains it to
administrators)

Postfix makes maildrop/ mode 1730 group postdrop and runs postdrop
set-group-ID postdrop.  Python cannot run set-group-ID, so pfy uses only
what the kernel enforces for an ordinary process:

    maildrop/   mode 3733 (setgid, sticky, rwx-wx-wx) owned by
                mail_owner and mail_owner's group.  Anyone may create a
                file in it; nobody but mail_owner may list it (no r bit);
                the sticky bit stops anyone from removing or renaming a file
                they do not own (mail_owner, the folder's owner, may: that
                is how pickup removes what it has taken); the setgid bit
                makes every new file belong to mail_owner's group, whoever
                creates it.
    a file      created with O_CREAT|O_EXCL|O_NOFOLLOW under a random
                128-bit name, mode 0600 while it is written (pickup, who
                reads through the group bits, cannot read it yet), then
                fsynced and fchmod()ed to 0740: that mode change is the
                "complete" mark (owner rwx is Postfix's "ready" mark, so
                postsuper -p never takes a waiting file for crash debris;
                group r lets pickup read it).  Group = mail_owner's group, so pickup can
                read it, and no other local user can (neither the mode nor
                the group gives them anything), even one who learns the name.
    identity    pickup takes the submitting user from the file's st_uid,
                which the kernel sets and a user cannot change, never from
                the content; it logs "uid=N from=<sender>" and adds
                "Received: ... (from userid N)" as Postfix's pickup does.

So the three guarantees hold without privilege: a user cannot pose as
another (st_uid), cannot read or delete another user's queued mail (group
bits, sticky bit), and sendmail needs no daemon (the file waits in
maildrop/ until pickup's next wakeup).  An instance run by an ordinary user
(the embedded mode) uses the same code; the folder then simply belongs to
that user.

FILE FORMAT (Postfix's postdrop output, global/rec_type.h; Debian's postcat
reads it)

    T "sec usec"                            arrival time
    A envelope_id=ID  A ret_flags=N         sendmail -V, -R
    A rewrite_context=local|remote          -G gives remote
    F full name  S sender
    A encoding=7bit|8bit  A trace_flags=N   -B, -v/-bv
    V verp delimiters                       -XV
    [A notify_flags=N] R rcpt ...           command line recipients
    M, then N/L content records, then X
    [A notify_flags=N] R rcpt ...           sendmail -t recipients
    E

The name is 26 characters of base32 (128 random bits), which is never a
queue ID: cleanup assigns the queue ID when pickup hands the file over.
"""

import os
import sys

__all__ = ["MAILDROP_WRITING", "MAILDROP_READY", "MaildropFile", "MaildropSession",
           "encode_record", "is_maildrop_name", "wake_pickup", "main"]

# The modes of a maildrop file (see the module docstring).
MAILDROP_WRITING = 0o600
MAILDROP_READY = 0o740
_NAME_LEN = 26                      # ceil(128 random bits / 5) base32 digits
_B32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32 = frozenset(_B32_ALPHABET)
_FLUSH_AT = 65536                   # write in 64 KiB pieces: flat memory


def _random_name() -> str:
    """26 base32 characters from 128 random bits (no base64 import)."""
    n = int.from_bytes(os.urandom(16), "big")
    out = []
    for _ in range(_NAME_LEN):
        out.append(_B32_ALPHABET[n & 31])
        n >>= 5
    return "".join(out)


def is_maildrop_name(name: str) -> bool:
    """True for a name that postdrop/sendmail could have made."""
    return len(name) == _NAME_LEN and all(c in _B32 for c in name)


def encode_record(rtype: int, data: bytes) -> bytes:
    """Postfix's record: type byte, little-endian base-128 length, payload.

    The same encoding as pfy/queue/record.py (a unit test holds them equal);
    repeated here so that sendmail, run once per message, does not import
    the queue package at start-up.
    """
    n = len(data)
    if n < 0x80:
        return bytes((rtype, n)) + data
    head = bytearray((rtype,))
    while n >= 0x80:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + data


class MaildropFile:
    """One new file in maildrop/: records in, fsync + ready mark at commit().

    Nothing is acknowledged before commit() returns; abort() (or any
    exception inside a ``with`` block) removes the file.
    """

    def __init__(self, maildrop_dir: str):
        flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC)
        # Retry on the (astronomically unlikely, or planted) name clash.
        for _ in range(10):
            name = _random_name()
            path = os.path.join(maildrop_dir, name)
            try:
                self.fd = os.open(path, flags, MAILDROP_WRITING)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"{maildrop_dir}: cannot create a unique file")
        self.name = name
        self.path = path
        self._buf = bytearray()
        self._done = False
        # The umask may have removed bits; the ready mark must be exact.
        os.fchmod(self.fd, MAILDROP_WRITING)
        # Arrival time first, as Postfix's postdrop writes it ("sec usec").
        import time
        now = time.time()
        self.record(84, b"%d %d" % (int(now), int((now % 1) * 1_000_000)))  # T

    def record(self, rtype: int, data: bytes) -> None:
        self._buf += encode_record(rtype, data)
        if len(self._buf) >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        view = memoryview(self._buf)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self._buf = bytearray()

    def commit(self) -> str:
        """Flush, fsync, set the ready mode; returns the file name."""
        self._flush()
        os.fsync(self.fd)
        os.fchmod(self.fd, MAILDROP_READY)
        os.close(self.fd)
        self.fd = -1
        self._done = True
        return self.name

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self._done:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self._done = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()
        return False


def wake_pickup(queue_directory: str, service: str = "pickup") -> str | None:
    """Send Postfix's wakeup request ("W") to public/SERVICE, never waiting.

    master.cf may make pickup a fifo or (Postfix 3's default) a unix
    service.  Returns None when the trigger was delivered or the daemons
    are merely down (the file waits for pickup's timer or next start), or
    the warning Postfix's postdrop prints when the endpoint does not exist.
    The FIFO case is inlined (no imports: sendmail's start-up); a socket
    goes through pfy.ipc.trigger.
    """
    import errno
    path = os.path.join(queue_directory, "public", service)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ENXIO:
            import stat
            try:
                is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
            except OSError:
                is_socket = False
            if is_socket:
                from pfy.ipc.trigger import unix_trigger
                try:
                    unix_trigger(path, b"W", timeout=2.0)
                except OSError:
                    pass
            return None                 # or a FIFO nobody reads: daemons down
        return f"unable to look up public/{service}: {os.strerror(err.errno)}"
    try:
        os.write(fd, b"W")
    except OSError:                     # pipe full (wakeups pending) or gone
        pass
    finally:
        os.close(fd)
    return None


# -- smtpd -S (sendmail -bs) -------------------------------------------------

class MaildropSession:
    """A maildrop file behind the interface smtpd has for a cleanup session
    (pfy/daemons/smtpd/_cleanup.py CleanupSession), for smtpd's stand-alone
    mode (smtpd -S, behind sendmail -bs).

    Postfix's smtpd -S runs as the user and hands each message to postdrop,
    never to cleanup: the message then enters the queue exactly like a
    sendmail submission, through pickup, stamped with the kernel's idea of
    who the user is ("uid=N", "Received: ... from userid N").  This class
    is that path for pfy: the records are written as sendmail writes them,
    and what a user may not set is left out here rather than warned about
    by pickup (the client attributes smtpd knows in stand-alone mode say
    "localhost[127.0.0.1]", which would be a lie in the log).

    queue_id is the maildrop file's name (pickup logs the real queue ID);
    finish() answers like cleanup (a CleanupStatus) only after the file is
    fsynced and marked complete; close() without finish() removes it.
    """

    # Attributes a maildrop file may carry: what pickup(8) accepts from
    # any user (the DSN ones it turns into their own records).
    _ATTRS = frozenset(("rewrite_context", "encoding", "trace_flags"))

    def __init__(self, queue_directory: str = ".", pickup_service: str = "pickup"):
        self.queue_directory = queue_directory
        self.pickup_service = pickup_service
        self.file = MaildropFile(os.path.join(queue_directory, "maildrop"))
        self.queue_id = self.file.name
        self.content = False
        self.extracted = False
        self.failed = False

    @classmethod
    async def open(cls, queue_directory: str = ".", pickup_service: str = "pickup",
                   **_ignored) -> "MaildropSession":
        """Raises OSError when maildrop/ cannot take a file."""
        return cls(queue_directory, pickup_service)

    def record(self, rtype: int, data: bytes) -> None:
        if self.failed:
            return
        try:
            self.file.record(rtype, data)
        except OSError:
            self.failed = True      # reported by finish(): 451 4.3.0

    def start(self, sender: str, attrs: dict, arrival=None, dsn_ret: int = 0,
              dsn_envid: str = "") -> None:
        # The arrival time is the file's own T record (MaildropFile).
        if dsn_envid:
            self.record(65, b"envelope_id=" + dsn_envid.encode("utf-8", "surrogateescape"))
        if dsn_ret:
            self.record(65, b"ret_flags=%d" % dsn_ret)
        rewrite = attrs.get("rewrite_context", "local")
        self.record(65, b"rewrite_context=" + rewrite.encode())
        self.record(83, sender.encode("utf-8", "surrogateescape"))        # S
        for name, value in attrs.items():
            if name in self._ATTRS and name != "rewrite_context":
                self.attr(name, value)

    def recipient(self, addr: str, orig_rcpt: str = "", dsn_orcpt: str = "",
                  dsn_notify: int = 0) -> None:
        if dsn_orcpt:
            self.record(65, b"dsn_orig_rcpt=" + dsn_orcpt.encode("utf-8", "surrogateescape"))
        if dsn_notify:
            self.record(65, b"notify_flags=%d" % dsn_notify)
        self.record(82, addr.encode("utf-8", "surrogateescape"))          # R

    def attr(self, name: str, value: str) -> None:
        if name in self._ATTRS:
            self.record(65, f"{name}={value}".encode("utf-8", "surrogateescape"))

    def begin_content(self) -> None:
        if not self.content:
            self.record(77, b"")                                           # M
            self.content = True

    def line(self, data: bytes, partial: bool = False) -> None:
        self.begin_content()
        self.record(76 if partial else 78, data)                           # L / N

    def lines(self, lines: list[bytes]) -> None:
        for data in lines:
            self.line(data)

    async def drain(self) -> None:
        """Nothing to wait for: the file is written as records come."""

    async def finish(self, extracted=()):
        """X, E, fsync, ready mark, wake pickup; then "queued".  The
        extracted records smtpd passes (FILTER, REDIRECT, HOLD flags from
        access tables) are not checked in stand-alone mode and a user may
        not set them: they are left out, as postdrop leaves them out."""
        from pfy.ipc.cleanup_client import CleanupStatus
        self.begin_content()
        self.record(88, b"")                                               # X
        self.record(69, b"")                                               # E
        try:
            if self.failed:
                raise OSError("write failed")
            self.file.commit()
        except OSError:
            self.close()
            # cleanup_user.h CLEANUP_STAT_WRITE, cleanup's own answer to it.
            return CleanupStatus(1 << 1, self.queue_id, 451,
                                 "4.3.0 Error: queue file write error")
        wake_pickup(self.queue_directory, self.pickup_service)
        return CleanupStatus(0, self.queue_id, 250, "")

    def close(self) -> None:
        self.file.abort()


# -- the postdrop command ----------------------------------------------------

# What postdrop accepts on stdin: a record stream as sendmail writes it
# (Postfix's postdrop copies only these; global/rec_type.h).
_ENVELOPE = frozenset(b"TAFSVRM")
_CONTENT = frozenset(b"NLX")
_EXTRACTED = frozenset(b"ARE")

_EX_USAGE, _EX_DATAERR, _EX_NOPERM, _EX_TEMPFAIL, _EX_UNAVAILABLE = 64, 65, 77, 75, 69


def _read_records(stream):
    """(type, payload) from a binary stream; ValueError when garbled."""
    read = stream.read
    while True:
        head = read(1)
        if not head:
            return
        length, shift = 0, 0
        for _ in range(5):
            b = read(1)
            if not b:
                raise ValueError("truncated record length")
            length |= (b[0] & 0x7F) << shift
            shift += 7
            if b[0] < 0x80:
                break
        else:
            raise ValueError("bad record length")
        if length > 1 << 20:                # pfy/queue/record.py MAX_RECORD
            raise ValueError(f"record length {length} too large")
        data = read(length)
        if len(data) != length:
            raise ValueError("truncated record")
        yield head[0], data


def copy_stream(stream, out: MaildropFile) -> None:
    """Copy a sendmail-made record stream into a maildrop file, checking
    that it is one (Postfix's postdrop does the same before pickup sees it)."""
    section = _ENVELOPE
    ended = False
    for rtype, data in _read_records(stream):
        if ended:
            raise ValueError("data after end record")
        if rtype not in section:
            raise ValueError(f"unexpected record type {chr(rtype)!r}")
        if rtype == ord("T"):
            continue        # the arrival time is ours (written at creation)
        if rtype == ord("M"):
            section = _CONTENT
        elif rtype == ord("X"):
            section = _EXTRACTED
        elif rtype == ord("E"):
            ended = True
        out.record(rtype, data)
    if not ended:
        raise ValueError("message file ends before its end record")


def main(argv: list[str] | None = None) -> None:
    from pfy.cli import _common
    from pfy.stdio import reopen_closed_stdio
    reopen_closed_stdio()
    args = sys.argv[1:] if argv is None else argv
    _common.set_program_name("postdrop")
    config_dir = None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-c" and i + 1 < len(args):
            config_dir = args[i + 1]
            i += 2
            continue
        if a.startswith("-c") and len(a) > 2:
            config_dir = a[2:]
        elif a in ("-r", "-v") or a.strip("v") == "-":
            pass    # -r: report protocol to sendmail, -v: verbose; both harmless here
        else:
            _common.fatal("usage: postdrop [-c config_dir] [-v]", _EX_USAGE)
        i += 1
    from pfy.cli.sendmail import read_settings
    settings = read_settings(config_dir)
    maildrop = os.path.join(settings["queue_directory"], "maildrop")
    try:
        out = MaildropFile(maildrop)
    except OSError as err:
        _common.fatal(f"create file {maildrop}/...: {err.strerror}", _EX_TEMPFAIL)
    with out:
        try:
            copy_stream(sys.stdin.buffer, out)
        except ValueError as err:
            _common.fatal(f"uid={os.getuid()}: malformed input: {err}", _EX_DATAERR)
        except OSError as err:
            _common.fatal(f"uid={os.getuid()}: error writing queue file: "
                          f"{err.strerror}", _EX_TEMPFAIL)
        out.commit()
    warn = wake_pickup(settings["queue_directory"], settings["pickup_service_name"])
    if warn:
        _common.warning(warn)
    raise SystemExit(0)


if __name__ == "__main__":
    main()
