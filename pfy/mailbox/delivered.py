"""The Delivered-To: values in a message's header: the mail forwarding loop
check (Postfix's global/delivered_hdr.c).

A recipient already named in a Delivered-To: header has had this message
before; local(8), virtual(8), and pipe(8) with flag D, bounce it (5.4.6
"mail forwarding loop for ADDR").  Values and addresses are compared
case-folded as text (Postfix casefolds UTF-8 with smtputf8_enable), the
bytes decoded as the envelope's are (surrogateescape), so a non-ASCII
address matches its own header.

    seen = delivered_to_set(reader.content_lines())
    if rcpt.address.lower() in seen: ...
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["delivered_to_set"]

# A message header section larger than this is not scanned further for
# Delivered-To (Postfix delivered_hdr.c stops at the first non-header too).
_MAX_HEADER_LINES = 10000


def delivered_to_set(lines: Iterable[bytes]) -> set[str]:
    """Lower-cased Delivered-To values in the header section (loop check)."""
    found: set[str] = set()
    for n, line in enumerate(lines):
        if not line or n >= _MAX_HEADER_LINES:
            break
        if line[:13].lower() == b"delivered-to:":
            found.add(line[13:].strip().decode("utf-8", "surrogateescape").lower())
    return found
