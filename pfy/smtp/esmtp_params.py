"""MAIL FROM / RCPT TO arguments: the path and the ESMTP parameters.

    MAIL FROM:<reverse-path> [SP mail-parameters]      RFC 5321 4.1.1.2
    RCPT TO:<forward-path> [SP rcpt-parameters]        RFC 5321 4.1.1.3

Parsing follows Postfix's smtpd (mail_cmd, rcpt_cmd, extract_addr):

- lenient by default: "MAIL FROM: <a@b>" (space after the colon) and
  "MAIL FROM:a@b" (no brackets) are accepted, RFC 822 comments are dropped
  and "<Name <a@b>>" yields a@b (postconf(5) smtpd_command_filter);
- strict_rfc821_envelopes = yes requires the <> and refuses comments and
  phrases;
- an RFC 821 source route "<@a,@b:u@c>" is stripped (RFC 5321 4.1.1.3 and
  Appendix C: MUST accept and SHOULD ignore it);
- the address comes back in internal (unquoted) form, as Postfix stores it.

Parameters: SIZE (RFC 1870), BODY=7BIT/8BITMIME (RFC 6152; BINARYMIME is
refused because, like Postfix, we do not announce it), SMTPUTF8 (RFC 6531),
RET and ENVID (RFC 3461 4.3, 4.4), AUTH= (RFC 4954 5), NOTIFY and ORCPT
(RFC 3461 4.1, 4.2). A bad parameter is a Reply, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from pfy.smtp import replies
from pfy.smtp.address import COMMENT, QSTRING, ATOM, DOMLIT, internalize, strip_source_route, tokenize
from pfy.smtp.replies import Reply
from pfy.smtp.xtext import xtext_decode

__all__ = [
    "MailParams", "RcptParams", "split_path_argument", "extract_address",
    "parse_mail_params", "parse_rcpt_params",
]

MAX_SIZE = 2 ** 63 - 1          # Postfix off_cvt_string(): the largest off_t
MAX_ENVID = 100                 # RFC 3461 4.4: ENVID at most 100 characters
MAX_ORCPT = 500                 # RFC 3461 4.2: ORCPT at most 500 characters
NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")   # RFC 3461 4.1


@dataclass(frozen=True)
class MailParams:
    size: int | None = None          # SIZE=, declared message size
    body: str | None = None          # "7BIT" or "8BITMIME"
    smtputf8: bool = False
    ret: str | None = None           # "FULL" or "HDRS"
    envid: str | None = None         # decoded xtext
    auth: str | None = None          # decoded AUTH= mailbox, "<>" for none


@dataclass(frozen=True)
class RcptParams:
    notify: tuple[str, ...] | None = None   # ("NEVER",) or subset of NOTIFY_WORDS
    orcpt_type: str | None = None           # address type, lower case ("rfc822", "utf-8", ...)
    orcpt: str | None = None                # decoded original recipient


def _scan_token(text: str, i: int) -> int:
    """End index of the path token starting at i: up to the first space
    outside <> and quoted strings."""
    n = len(text)
    depth = 0
    quoted = False
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif ch == "\\":
            i += 2
            continue
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            # The token goes on to the next space, as in Postfix's
            # smtpd_token(): "<a@b>junk" is one (bad) address, not an
            # address and a parameter "junk".
            depth = max(depth - 1, 0)
        elif ch in " \t" and depth <= 0:
            return i
        i += 1
    return n


def split_path_argument(rest: str, keyword: str) -> tuple[str, list[str]] | None:
    """'FROM:<a@b> SIZE=10' -> ('<a@b>', ['SIZE=10']); None on bad syntax.

    keyword is "FROM" or "TO"; it must be followed by ":", then optional
    spaces (Postfix tolerates them even with strict_rfc821_envelopes).
    """
    text = rest.lstrip(" \t")
    head = keyword + ":"
    if text[:len(head)].upper() != head:
        return None
    text = text[len(head):].lstrip(" \t")
    if not text:
        return None
    end = _scan_token(text, 0)
    path = text[:end]
    params = text[end:].split()
    return path, params


def extract_address(path: str, *, strict: bool) -> str | None:
    """The address in internal form, "" for "<>", None when unusable."""
    bracketed = path.startswith("<") and path.endswith(">")
    if strict and not bracketed:
        return None
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        return None
    tokens = tokenize(path)
    if any(t.kind == COMMENT for t in tokens):
        if strict:
            return None
        tokens = [t for t in tokens if t.kind != COMMENT]
    # Innermost <...>: "<Name <a@b>>" -> a@b, as Postfix's tok822 address
    # grep finds the route-addr inside the phrase.
    opens = [i for i, t in enumerate(tokens) if t.kind == "<"]
    if opens:
        start = opens[-1]
        try:
            end = next(i for i in range(start, len(tokens)) if tokens[i].kind == ">")
        except StopIteration:
            return None
        outside = tokens[:opens[0]] + tokens[end + 1:]
        if len(opens) > 1:
            # a phrase around the route-addr: fine unless strict
            if strict:
                return None
            if any(t.kind == "<" or t.kind == ">" for t in tokens[start + 1:end]):
                return None
        elif any(t.kind != ">" for t in outside):
            return None
        inner = tokens[start + 1:end]
    else:
        if any(t.kind == ">" for t in tokens):
            return None
        inner = tokens
    # Two words in a row ("a b@c") are two addresses or a phrase: refuse,
    # as Postfix's extract_addr does when it finds more than one address.
    words = (ATOM, QSTRING, DOMLIT)
    for a, b in zip(inner, inner[1:]):
        if a.kind in words and b.kind in words:
            return None
    inner = strip_source_route(inner)
    if any(t.kind in ("<", ">", ",", ";", ":") for t in inner):
        return None
    return internalize(inner)


def parse_mail_params(params: list[str], *, dsn: bool, smtputf8: bool,
                      auth: bool) -> MailParams | Reply:
    """MAIL FROM parameters; dsn/smtputf8/auth say whether the extension
    is offered to this client (not discarded, enabled)."""
    size = body = ret = envid = auth_param = None
    utf8 = False
    for arg in params:
        name, eq, value = arg.partition("=")
        key = name.upper()
        if key == "SIZE" and eq:
            if not value.isascii() or not value.isdigit():
                return replies.BAD_SIZE
            size = int(value)
            if size > MAX_SIZE:
                return replies.SIZE_OVERFLOW
        elif key == "BODY" and eq and value.upper() in ("7BIT", "8BITMIME"):
            body = value.upper()
        elif key == "SMTPUTF8" and not eq and smtputf8:
            utf8 = True
        elif key == "RET" and eq and dsn:
            if ret is not None or value.upper() not in ("FULL", "HDRS"):
                return replies.BAD_RET
            ret = value.upper()
        elif key == "ENVID" and eq and dsn:
            decoded = xtext_decode(value)
            if (envid is not None or decoded is None or not decoded
                    or len(decoded) > MAX_ENVID or not decoded.isprintable()):
                return replies.BAD_ENVID
            envid = decoded
        elif key == "AUTH" and eq:
            if not auth:
                # Postfix 3.7 ignores AUTH= when it offers no AUTH (checked
                # side by side): a relay may pass it on from upstream.
                continue
            decoded = "<>" if value == "<>" else xtext_decode(value)
            if auth_param is not None or not decoded or not decoded.isprintable():
                return replies.BAD_AUTH_PARAM
            auth_param = decoded
        else:
            return replies.unsupported_option(arg)
    return MailParams(size=size, body=body, smtputf8=utf8, ret=ret,
                      envid=envid, auth=auth_param)


def parse_rcpt_params(params: list[str], *, dsn: bool) -> RcptParams | Reply:
    notify: tuple[str, ...] | None = None
    orcpt_type = orcpt = None
    for arg in params:
        name, eq, value = arg.partition("=")
        key = name.upper()
        if key == "NOTIFY" and eq and dsn:
            words = [w.upper() for w in value.split(",")]
            if notify is not None or len(set(words)) != len(words):
                return replies.BAD_NOTIFY
            if words == ["NEVER"]:
                notify = ("NEVER",)
            elif words and all(w in NOTIFY_WORDS for w in words):
                notify = tuple(w for w in NOTIFY_WORDS if w in words)
            else:
                return replies.BAD_NOTIFY
        elif key == "ORCPT" and eq and dsn:
            kind, semi, raw = value.partition(";")
            decoded = xtext_decode(raw) if semi else None
            # Postfix's rcpt_cmd() checks the xtext and the length only:
            # any address type, even an empty address, is carried on.
            if (orcpt is not None or not semi or not kind or decoded is None
                    or len(value) > MAX_ORCPT or (decoded and not decoded.isprintable())):
                return replies.BAD_ORCPT
            orcpt_type, orcpt = kind.lower(), decoded
        else:
            return replies.unsupported_option(arg)
    return RcptParams(notify=notify, orcpt_type=orcpt_type, orcpt=orcpt)
