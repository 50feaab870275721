"""xtext, the encoding of DSN ENVID and ORCPT values (RFC 3461 4) and of
XCLIENT / XFORWARD attribute values (Postfix XCLIENT_README).

    xtext      = *( xchar / hexchar )
    xchar      = any ASCII CHAR between "!" (33) and "~" (126) inclusive,
                 except for "+" and "="
    hexchar    = "+" HEXDIG HEXDIG      ; upper-case hex digits only

Decoding is strict, as Postfix's xtext_unquote(): a "+" not followed by
two hex digits, or a character outside xchar, makes the value invalid
(None), so the caller replies 501 instead of storing garbage.
"""

from __future__ import annotations

__all__ = ["xtext_decode", "xtext_encode", "is_xchar"]

_HEX = "0123456789ABCDEF"


def is_xchar(ch: str) -> bool:
    """RFC 3461 4: printable US-ASCII except "+" and "="."""
    return "!" <= ch <= "~" and ch not in "+="


def xtext_decode(text: str, *, lenient_hex: bool = True) -> str | None:
    """Decode xtext; None when the text is not valid xtext.

    RFC 3461 requires upper-case hex; Postfix's xtext_unquote accepts
    either case (it uses its own hex decoder), so lenient_hex defaults on.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "+":
            pair = text[i + 1:i + 3]
            if len(pair) != 2:
                return None
            check = pair.upper() if lenient_hex else pair
            if check[0] not in _HEX or check[1] not in _HEX:
                return None
            out.append(chr(int(check, 16)))
            i += 3
            continue
        if not is_xchar(ch):
            return None
        out.append(ch)
        i += 1
    return "".join(out)


def xtext_encode(text: str) -> str:
    """Encode text as xtext: "+", "=", controls, space and non-ASCII as +HH.

    Non-ASCII characters are encoded byte by byte from their UTF-8 form, so
    the result is always pure ASCII.
    """
    out: list[str] = []
    for ch in text:
        if is_xchar(ch):
            out.append(ch)
        else:
            out.extend("+%02X" % b for b in ch.encode("utf-8"))
    return "".join(out)
