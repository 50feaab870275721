"""Walk message content line by line: headers, MIME parts, nested messages.

A streaming version of Postfix's mime_state(3): feed() takes one line (no
newline) and returns events; only the header being assembled is held in
memory, body lines pass straight through. The events tell cleanup which
check applies to what (header_checks(5)):

    ("header", PRIMARY, text)     message headers      -> header_checks
    ("header", MULTIPART, text)   MIME part headers    -> mime_header_checks
    ("header", NESTED, text)      attached message     -> nested_header_checks
    ("header_end", kind, None)    end of a header block (before its line)
    ("body", BODY, line)          everything else      -> body_checks

Header text is the logical header with its physical lines joined by "\\n".
Boundary lines and the empty line after a header block are body lines, as
in Postfix. With mime=False (disable_mime_input_processing) only the
primary headers are recognized.
"""

from __future__ import annotations

import re

from pfy.message.headers import is_header

__all__ = ["ContentWalker", "PRIMARY", "MULTIPART", "NESTED", "BODY"]

PRIMARY = "header"           # the words Postfix logs: "header", "mime", "nested", "body"
MULTIPART = "mime"
NESTED = "nested"
BODY = "body"

_CTYPE = re.compile(r"\s*([!-~]+?)\s*/\s*([!-~]+?)\s*(?:;|$)", re.S)
_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;]+))', re.I | re.S)


def _content_type(value: str) -> tuple[str, str, str | None]:
    m = _CTYPE.match(value.replace("\n", " "))
    if not m:
        return "text", "plain", None
    b = _BOUNDARY.search(value.replace("\n", " "))
    boundary = None
    if b:
        boundary = b.group(1) if b.group(1) is not None else b.group(2)
    return m.group(1).lower(), m.group(2).lower(), boundary


class ContentWalker:
    def __init__(self, header_size_limit: int = 102400, mime_nesting_limit: int = 100,
                 mime: bool = True):
        self.header_size_limit = header_size_limit
        self.nesting_limit = mime_nesting_limit
        self.mime = mime
        self.kind = PRIMARY                 # header block being read, or BODY
        self.pending: list[str] = []
        self.pending_len = 0
        self.truncated = False              # this header exceeded header_size_limit
        self.errors: set[str] = set()       # "header too long", "nesting"
        self.boundaries: list[str] = []
        self.ctype: tuple[str, str, str | None] | None = None

    # -- header assembly ----------------------------------------------------
    def _flush_header(self, out: list) -> None:
        if not self.pending:
            return
        text = "\n".join(self.pending)
        if self.mime and text[:13].lower() == "content-type:":
            self.ctype = _content_type(text[13:])
        out.append(("header", self.kind, text))
        self.pending = []
        self.pending_len = 0
        self.truncated = False

    def _add_line(self, line: str) -> None:
        # header_size_limit: the excess is discarded (postconf(5)).
        if self.pending_len + len(line) + 1 > self.header_size_limit:
            self.truncated = True
            self.errors.add("header too long")
            room = self.header_size_limit - self.pending_len - 1
            if room > 0:
                self.pending.append(line[:room])
                self.pending_len += room + 1
            return
        self.pending.append(line)
        self.pending_len += len(line) + 1

    def _end_headers(self, out: list) -> None:
        self._flush_header(out)
        out.append(("header_end", self.kind, None))
        ctype, self.ctype = self.ctype, None
        self.kind = BODY
        if not self.mime or ctype is None:
            return
        major, minor, boundary = ctype
        if major == "multipart" and boundary:
            if len(self.boundaries) >= self.nesting_limit:
                self.errors.add("MIME nesting exceeds safety limit")
            else:
                self.boundaries.append(boundary)
        elif major == "message" and minor in ("rfc822", "global"):
            self.next_nested = True

    # -- the public interface ---------------------------------------------------
    next_nested = False

    def feed(self, line: str) -> list:
        out: list = []
        if self.kind != BODY:
            if self.pending and line[:1] in (" ", "\t"):
                self._add_line(line)
                return out
            if is_header(line):
                self._flush_header(out)
                self._add_line(line)
                return out
            self._end_headers(out)
            if self.next_nested:
                # The empty line after the part headers, then the attached
                # message's own headers.
                self.next_nested = False
                if line == "":
                    out.append(("body", BODY, line))
                    self.kind = NESTED
                    return out
                self.kind = NESTED
                return out + self.feed(line)
        if self.boundaries and line.startswith("--"):
            for depth in range(len(self.boundaries) - 1, -1, -1):
                b = self.boundaries[depth]
                if line.startswith(b, 2):
                    if line.startswith("--", 2 + len(b)):
                        del self.boundaries[depth:]
                        self.kind = BODY
                    else:
                        del self.boundaries[depth + 1:]
                        self.kind = MULTIPART
                    out.append(("body", BODY, line))
                    return out
        out.append(("body", BODY, line))
        return out

    def end(self) -> list:
        """End of content: a message that is all headers still ends them."""
        out: list = []
        if self.kind != BODY:
            self._end_headers(out)
        return out
