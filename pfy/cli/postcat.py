"""postcat - show the contents of queue files (postcat(1)).

    postcat [-bdehoqrv] [-c config_dir] [-s offset] [files...]

Shows envelope records (-e), message headers (-h) and body (-b) of the
named queue files, of the files with the given queue IDs (-q, searched in
maildrop, incoming, active, deferred, hold and saved), or of standard
input.  Without -e, -h or -b, shows all three.  -o prints each record's
offset, -d its decimal type, -s starts at an offset, -r does not follow
pointer records, -v shows every record with its type name.

The output is Debian's Postfix 3.7 postcat's, byte for byte, for the same
file (tests/compare/test_queue_admin_postcat.py): the state machine below
follows postcat.c's, including its quirks (the header/body split is a
guess from the line shape; a long-line piece ends its line only where
Postfix's would).
"""

from __future__ import annotations

import getopt
import os
import sys
import time

from pfy.cli import _common

__all__ = ["main", "run", "postcat", "PRINT_ENV", "PRINT_HEADER", "PRINT_BODY"]

USAGE = ("usage: {0} [-b (body text)] [-c config_dir] [-d (decimal record type)] "
         "[-e (envelope records)] [-h (header text)] [-q (access queue)] [-v] "
         "[file(s)...]")

PRINT_OFFSET, PRINT_ENV, PRINT_HEADER, PRINT_BODY = 1 << 1, 1 << 2, 1 << 3, 1 << 4
PRINT_RTYPE_DEC, RAW = 1 << 5, 1 << 7
PRINT_TEXT = PRINT_HEADER | PRINT_BODY
PRINT_ALL = PRINT_ENV | PRINT_TEXT

_ENV, _HEADER, _BODY = 0, 1, 2

# Postfix 3.7 rec_type_name(), as Debian's postcat prints them ('L' is both
# content_filter and a long-line piece; the table gives content_filter).
_NAMES = {
    "C": "message_size", "T": "message_arrival_time", "c": "queue_file_create_time",
    "F": "sender_fullname", "I": "content_inspector", "L": "content_filter",
    "S": "sender", "D": "done_recipient", "R": "recipient",
    "O": "original_recipient", "/": "canceled_recipient",
    "W": "warning_message_time", "A": "named_attribute", "K": "killed_record",
    ">": "redirect_to", "f": "flags", "M": "message_content", "N": "regular_text",
    "w": "padding", "X": "extracted_info", "r": "return_receipt", "e": "errors_to",
    "P": "priority", "p": "pointer_record", "V": "verp_delimiters",
    "<": "dsn_return_flags", "i": "dsn_envelope_id", "o": "dsn_original_recipient",
    "n": "dsn_notify_flags", "E": "message_end",
}
# REC_TYPE_ENVELOPE (rec_type.h): what a queue file may start with.
_ENVELOPE_START = frozenset(b"MCTcFILSDRO/WVA>K<ion")
# Reverse pointer jumps allowed before a file counts as looping (record.c).
_REVERSE_JUMP_LIMIT = 10000


def _name(rtype: int) -> str:
    return _NAMES.get(chr(rtype), "unknown_record_type")


class _Fatal(Exception):
    pass


def _atol(data: bytes) -> int:
    """C atol(): leading blanks, a sign, digits; anything else ends it."""
    s = data.lstrip(b" \t\n\r\f\v")
    sign = 1
    if s[:1] in (b"-", b"+"):
        sign = -1 if s[:1] == b"-" else 1
        s = s[1:]
    n = 0
    for b in s:
        if not 48 <= b <= 57:
            break
        n = n * 10 + b - 48
    return sign * n


def _asctime(t: int) -> bytes:
    try:
        return (time.asctime(time.localtime(t)) + "\n").encode()
    except (OverflowError, OSError, ValueError):
        return b"??\n"


def is_header(line: bytes) -> bool:
    """Postfix is_header(): a name of printable ASCII without blanks or ':',
    optional blanks, then ':'.  Stops at a NUL, as the C string does."""
    state = 0               # 0 init, 1 in name, 2 blanks after name
    for c in line:
        if c == 0x3A:        # ':'
            return state != 0
        if c in (0x20, 0x09):
            if state == 0:
                return False
            state = 2
            continue
        if c == 0 or c >= 0x80 or c < 0x20 or c == 0x7F or state == 2:
            return False
        state = 1
    return False


def _split_nameval(text: bytes):
    """Postfix split_nameval(): (error, name, value)."""
    s = text.lstrip(b" \t\n\r\f\v")
    if not s:
        return "missing attribute name", b"", b""
    i = 0
    while i < len(s) and s[i] not in b" \t\n\r\f\v=":
        i += 1
    name = s[:i]
    rest = s[i:].lstrip(b" \t\n\r\f\v")
    if not rest.startswith(b"="):
        return "missing '=' after attribute name", b"", b""
    return None, name, rest[1:].strip(b" \t\n\r\f\v")


class _Reader:
    """Postfix rec_get_raw() over a binary file: (offset, type, data)."""

    def __init__(self, fp, path: str, skip_padding: bool, follow_ptr: bool):
        self.fp = fp
        self.path = path
        self.skip_padding = skip_padding
        self.follow_ptr = follow_ptr
        self.saved_jump = 0
        self.reverse_jumps = 0
        self.pos = 0
        try:
            self.pos = fp.tell()
        except OSError:
            pass

    def _read(self, n: int) -> bytes:
        data = self.fp.read(n)
        self.pos += len(data)
        return data

    def seek(self, offset: int) -> None:
        try:
            self.fp.seek(offset)
        except (OSError, ValueError) as err:
            raise _Fatal(f"seek error: {getattr(err, 'strerror', None) or 'Illegal seek'}")
        self.pos = offset

    def skip(self, n: int) -> None:
        """Absorb n bytes (postcat -s on a stream that cannot seek)."""
        while n > 0:
            got = self._read(min(n, 65536))
            if not got:
                raise _Fatal(f"{self.path}: skip failed")
            n -= len(got)

    def read(self):
        while True:
            offset = self.pos
            head = self._read(1)
            if not head:
                return None
            rtype = head[0]
            length = shift = 0
            while True:
                b = self._read(1)
                if not b:
                    _common.warning(f"{self.path}: unexpected EOF in record length, "
                                    f"record type {rtype}")
                    raise _Fatal("record read error")
                length |= (b[0] & 0x7F) << shift
                if b[0] < 0x80:
                    break
                shift += 7
                if shift > 8 * 4:
                    _common.warning(f"{self.path}: too many length bits, record type {rtype}")
                    raise _Fatal("record read error")
            data = self._read(length)
            if len(data) != length:
                _common.warning(f"{self.path}: unexpected EOF in data, record type "
                                f"{rtype} length {length}")
                raise _Fatal("record read error")
            if self.skip_padding and rtype == ord("w"):
                continue
            if self.follow_ptr and rtype == ord("p"):
                if not self.goto(data):
                    raise _Fatal("record read error")
                continue
            return offset, rtype, data

    def goto(self, data: bytes) -> bool:
        """Postfix rec_goto(): follow a pointer record; False on error."""
        text = data.strip(b" \t")
        if not text.isdigit():
            _common.warning(f"{self.path}: malformed pointer record value: "
                            f"{data.decode('ascii', 'replace')}")
            return False
        target = int(text)
        if target == 0:                     # a dummy pointer
            return True
        if target <= self.saved_jump:
            self.reverse_jumps += 1
            if self.reverse_jumps > _REVERSE_JUMP_LIMIT:
                _common.warning(f"{self.path}: too many reverse jump records")
                return False
        try:
            self.seek(target)
        except _Fatal as err:
            _common.warning(f"{self.path}: {err}")
            return False
        self.saved_jump = target
        return True


def postcat(fp, path: str, flags: int, out, verbose: int = 0,
            start_offset: int = 0) -> None:
    """Show one queue file (postcat.c postcat()); writes bytes to out."""
    w = out.write
    # Postfix reads with REC_FLAG_DEFAULT (skip padding, follow pointers
    # inside the reader) unless -v, which shows every record as it is.
    r = _Reader(fp, path, skip_padding=not verbose, follow_ptr=not verbose)
    if start_offset > 0:
        try:
            seekable = fp.seekable()
        except (OSError, ValueError):
            seekable = False
        if seekable:
            r.seek(start_offset)
        else:
            r.skip(start_offset)
    if start_offset == 0:
        first = fp.peek(1)[:1] if hasattr(fp, "peek") else b""
        if first and first[0] not in _ENVELOPE_START:
            _common.warning(f"{path}: input is not a valid queue file")
            return
    bpath = path.encode("utf-8", "surrogateescape")
    if start_offset == 0 and flags & PRINT_ENV:
        w(b"*** ENVELOPE RECORDS %s ***\n" % bpath)
    state = _ENV
    do_print = flags & PRINT_ENV
    data_offset = data_size = -1
    prev_type = 0

    def marker(offset: int, rtype: int, text: bytes) -> None:
        if flags & PRINT_OFFSET:
            w(b"%9d " % offset)
        if flags & PRINT_RTYPE_DEC:
            w(b"%3d " % rtype)
        w(b"*** %s %s ***\n" % (text, bpath))

    def prefix(offset: int, rtype: int) -> None:
        if flags & PRINT_OFFSET:
            w(b"%9d " % offset)
        if flags & PRINT_RTYPE_DEC:
            w(b"%3d " % rtype)

    while True:
        rec = r.read()
        if rec is None:
            break
        offset, rtype, data = rec
        if rtype in (0x4C, 0x4E):                    # L, N: text
            if (state == _HEADER and flags & PRINT_TEXT and prev_type != 0x4C
                    and not (is_header(data) or data[:1] in (b" ", b"\t"))):
                state = _BODY
                do_print = flags & PRINT_BODY
                if not do_print and not flags & PRINT_ENV:
                    break
                if not do_print and flags & PRINT_ENV and data_offset > 0 and data_size >= 0:
                    r.seek(data_offset + data_size)
        elif rtype == 0x4D:                          # M
            if state != _ENV:
                _common.warning(f"{path}: out-of-order message content marker")
            if flags & PRINT_ENV:
                marker(offset, rtype, b"MESSAGE CONTENTS")
            if not flags & PRINT_TEXT and data_offset > 0 and data_size >= 0:
                r.seek(data_offset + data_size)
            state = _HEADER
            do_print = flags & PRINT_HEADER
            continue
        elif rtype == 0x58:                          # X
            if state not in (_HEADER, _BODY):
                _common.warning(f"{path}: out-of-order extracted segment marker")
            if do_print and prev_type == 0x4C:
                w(b"\n")
            if flags & PRINT_ENV:
                marker(offset, rtype, b"HEADER EXTRACTED")
            state = _ENV
            do_print = flags & PRINT_ENV
            if not do_print:
                break
            continue
        elif rtype == 0x45:                          # E
            if state != _ENV:
                _common.warning(f"{path}: out-of-order message end marker")
            if flags & PRINT_ENV:
                marker(offset, rtype, b"MESSAGE FILE END")
            if flags & RAW:
                continue
            break
        elif rtype == 0x70:                          # p: pointer
            if do_print:
                prefix(offset, rtype)
                w(b"%s: %s\n" % (_name(rtype).encode(), data))
            if not flags & RAW and not r.goto(data):
                raise _Fatal("bad pointer record, or input is not seekable")
            continue
        elif rtype == 0x43:                          # C: size
            if do_print:
                prefix(offset, rtype)
                w(b"%s: %s\n" % (_name(rtype).encode(), data))
            if data_size >= 0 or data_offset >= 0:
                _common.warning("file contains multiple size records")
            else:
                parts = data.split()
                try:
                    data_size, data_offset = int(parts[0]), int(parts[1])
                    ok = data_offset > 0 and data_size > 0
                except (ValueError, IndexError):
                    ok = False
                if not ok:
                    _common.warning("invalid size record: %s"
                                    % data[:100].decode("utf-8", "replace"))
                if not flags & PRINT_ENV:
                    r.seek(data_offset)
                    state = _HEADER
                    do_print = flags & PRINT_HEADER
            continue

        if not do_print:
            continue
        prefix(offset, rtype)
        if rtype == 0x54:                            # T
            w(b"%s: %s" % (_name(rtype).encode(), _asctime(_atol(data))))
        elif rtype == 0x57:                          # W
            w(b"%s: %s" % (_name(rtype).encode(), _asctime(_atol(data))))
        elif rtype == 0x4C:                          # L
            if state == _ENV:
                w(b"%s: " % _name(rtype).encode())
            elif verbose:
                w(b"unterminated_text: ")
            w(data)
            if state == _ENV or verbose or flags & PRINT_OFFSET:
                rtype = 0
                w(b"\n")
        elif rtype == 0x4E:                          # N
            if verbose:
                w(b"%s: " % _name(rtype).encode())
            w(data + b"\n")
        elif rtype == 0x77:                          # w: padding
            w(b"%s: %s\n" % (_name(rtype).encode(), data))
        elif rtype == 0x41:                          # A
            err, name, value = _split_nameval(data)
            if err:
                _common.warning(f"{path}: malformed attribute: {err}: "
                                f"{data[:100].decode('utf-8', 'replace')}")
            elif name == b"create_time":
                w(b"create_time: %s" % _asctime(_atol(value)))
            else:
                w(b"%s: %s=%s\n" % (_name(rtype).encode(), name, value))
        else:
            w(b"%s: %s\n" % (_name(rtype).encode(), data))
        prev_type = rtype
        out.flush()


def _open_in_queue(cfg, queue_id: str):
    """(file, path) from the first queue holding queue_id, as postcat -q."""
    from pfy.queue import Queue
    q = Queue("", hash_queue_depth=cfg.hash_queue_depth,
              hash_queue_names=cfg.hash_queue_names)
    err = None
    for _ in range(2):                       # a file may move while we look
        for name in ("maildrop", "incoming", "active", "deferred", "hold", "saved"):
            path = q.path(name, queue_id)
            try:
                return open(path, "rb"), path
            except OSError as e:
                err = e
    raise _Fatal(f"open queue file {queue_id}: {err.strerror}")


def run(argv: list[str]) -> int:
    prog = "postcat"
    try:
        opts, args = getopt.getopt(argv, "bc:dehoqrs:v")
    except getopt.GetoptError:
        _common.fatal(USAGE.format(prog))
    flags = 0
    search = False
    config_opt = None
    verbose = 0
    start_offset = 0
    for opt, val in opts:
        if opt == "-b":
            flags |= PRINT_BODY
        elif opt == "-c":
            config_opt = val
        elif opt == "-d":
            flags |= PRINT_RTYPE_DEC
        elif opt == "-e":
            flags |= PRINT_ENV
        elif opt == "-h":
            flags |= PRINT_HEADER
        elif opt == "-o":
            flags |= PRINT_OFFSET
        elif opt == "-q":
            search = True
        elif opt == "-r":
            flags |= RAW
        elif opt == "-s":
            if not val.isdigit() or not val.isascii():
                _common.fatal(f"bad offset: {val}")
            start_offset = int(val)
        elif opt == "-v":
            verbose += 1
    if not flags & PRINT_ALL:
        flags |= PRINT_ALL

    from pfy.config import load_config
    cfg = load_config(_common.config_dir_from(config_opt))
    out = sys.stdout.buffer
    try:
        if not args:
            postcat(sys.stdin.buffer, "stdin", flags, out, verbose, start_offset)
        elif search:
            from pfy.queue import is_queue_id
            try:
                os.chdir(cfg.queue_directory)
            except OSError as err:
                _common.fatal(f"chdir {cfg.queue_directory}: {err.strerror}")
            for queue_id in args:
                if not is_queue_id(queue_id):
                    _common.fatal(f"bad mail queue ID: {queue_id}")
                fp, path = _open_in_queue(cfg, queue_id)
                with fp:
                    postcat(fp, path, flags, out, verbose, start_offset)
        else:
            for path in args:
                try:
                    fp = open(path, "rb")
                except OSError as err:
                    _common.fatal(f"open {path}: {err.strerror}")
                with fp:
                    postcat(fp, path, flags, out, verbose, start_offset)
    except _Fatal as err:
        out.flush()
        _common.fatal(str(err))
    out.flush()
    return 0


def main() -> None:
    _common.set_program_name("postcat")
    _common.run_main(run, sys.argv[1:])


if __name__ == "__main__":
    main()
