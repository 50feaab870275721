"""Queue IDs as Postfix makes them (global/mail_queue.h, postconf(5)).

Short form (enable_long_queue_ids = no): the microseconds of the creation
time as 5 upper-case hex digits, then the inode number in hex:
``03CE18819A`` = usec 0x03CE1, inode 0x8819A.  Unique among the files that
exist at once, because two live files on one file system never share an
inode (the whole queue_directory must be one file system, as in Postfix).

Long form (enable_long_queue_ids = yes): seconds in base 52 (6 or more
characters), microseconds in base 52 (exactly 4), the separator 'z', then
the inode in base 51 (so it holds no 'z').  Never repeats on a host whose
clock moves forward.  The alphabet omits vowels so no ID spells a word.

Hashed queue folders (hash_queue_depth, hash_queue_names) take their
one-character names from the microseconds in hex, for both forms: with short
IDs these are the first characters of the ID itself.
"""

from __future__ import annotations

import re

__all__ = ["short_queue_id", "long_queue_id", "is_queue_id",
           "queue_id_usec", "hash_dirs", "SAFE_CHARS"]

# Postfix util/safe_ultostr.c: digits, then consonants upper and lower case.
SAFE_CHARS = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
_SAFE_INDEX = {c: i for i, c in enumerate(SAFE_CHARS)}
_SEC_PAD = 6       # MQID_LG_SEC_PAD: seconds, minimum width
_USEC_PAD = 4      # MQID_LG_USEC_PAD: microseconds, exact width (52**4 > 10**6)
_SH_USEC_PAD = 5   # MQID_SH_USEC_PAD: "%05X" microseconds (16**5 > 10**6)
_SEP = "z"         # MQID_LG_INUM_SEP

_SHORT_RE = re.compile(r"[0-9A-F]{6,}\Z")
_LONG_RE = re.compile(r"[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{%d,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+\Z"
                      % (_SEC_PAD + _USEC_PAD))


def _encode(value: int, base: int, pad: int) -> str:
    out = []
    while value:
        value, r = divmod(value, base)
        out.append(SAFE_CHARS[r])
    s = "".join(reversed(out))
    return s.rjust(pad, "0")


def short_queue_id(usec: int, inode: int) -> str:
    """Postfix's short ID: ``%05X%lX`` of microseconds and inode."""
    return "%05X%X" % (usec, inode)


def long_queue_id(sec: int, usec: int, inode: int) -> str:
    """Postfix's long ID: base-52 seconds and microseconds, 'z', base-51 inode."""
    return (_encode(sec, 52, _SEC_PAD) + _encode(usec, 52, _USEC_PAD)
            + _SEP + _encode(inode, 51, 0))


def is_queue_id(name: str) -> bool:
    """True for a file name that is a queue ID of either form.

    Temporary files (see queue_file.py) contain a '.', so they never pass.
    """
    return bool(_SHORT_RE.match(name) or _LONG_RE.match(name))


def queue_id_usec(queue_id: str) -> int:
    """The creation microseconds encoded in a queue ID (either form)."""
    sep = queue_id.rfind(_SEP)
    if sep >= _SEC_PAD + _USEC_PAD:
        value = 0
        for c in queue_id[sep - _USEC_PAD:sep]:
            value = value * 52 + _SAFE_INDEX[c]
        return value
    return int(queue_id[:_SH_USEC_PAD], 16)


def hash_dirs(queue_id: str, depth: int) -> list[str]:
    """The one-character subfolder names for a hashed queue, outermost first.

    Postfix global/mail_queue.c: the first ``depth`` characters of the
    microseconds in "%05X" form (for short IDs, of the ID itself).
    """
    if depth <= 0:
        return []
    if _SEP in queue_id:
        key = "%05X" % queue_id_usec(queue_id)
    else:
        key = queue_id
    return list(key[:depth])
