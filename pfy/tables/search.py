"""The search orders of Postfix's lookup tables, in one place.

Every caller that looks up an address, host name or IP address in a list of
tables (a "maps" parameter) goes through here, so that access(5),
aliases(5), virtual(5), canonical(5) and transport(5) behave the same in
every daemon.

Rules shared by all orders (Postfix's maps_find() and mail_addr_find()):
- Each query pattern is tried in every table of the list before the next
  pattern is tried; the first table that answers wins.
- The first pattern (the whole key as given) goes to every table; later,
  partial patterns (domain, user@, @domain, truncated addresses, keys with
  the extension removed) go only to fixed-string tables: regexp, pcre and
  cidr tables see the whole key only (Table.pattern).
- Case folding is the tables' job (fold=True lowercases for fixed-string
  tables, as DICT_FLAG_FOLD_FIX); patterns are built from the key as given.
- A TableTempFail from any table ends the search with that exception: a
  later, weaker match must not be used when a stronger one might exist.

Each function returns a Match (the key that matched, the value, and the
address extension that was removed to find it, for
propagate_unmatched_extensions) or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from pfy.tables._base import Table

__all__ = [
    "Maps", "Match", "split_addr", "parent_style",
    "access_address", "access_host", "access_ip",
    "alias_lookup", "virtual_lookup", "canonical_lookup", "transport_lookup",
]


@dataclass(frozen=True)
class Match:
    key: str                    # the query pattern that matched ("@example.com")
    value: str
    table: str = ""             # "type:name" of the table that answered
    extension: str | None = None  # extension removed to find this key, without delimiter
    delimiter: str = ""         # the delimiter character that preceded the extension


class Maps:
    """An ordered list of tables, searched first-match (Postfix's MAPS)."""

    def __init__(self, tables: Iterable[Table]):
        self.tables = list(tables)

    def find(self, key: str, partial: bool = False) -> Match | None:
        """Look key up in each table in turn; partial=True skips pattern tables."""
        for table in self.tables:
            if partial and table.pattern:
                continue
            value = table.lookup(key)
            if value is not None:
                return Match(key, value, table.spec)
        return None

    def __bool__(self) -> bool:
        return bool(self.tables)

    def __len__(self) -> int:
        return len(self.tables)


def _as_maps(maps) -> Maps:
    if isinstance(maps, Maps):
        return maps
    if isinstance(maps, Table) or hasattr(maps, "lookup"):
        return Maps([maps])
    return Maps(maps)


# split_addr.c: these local parts are never split at the delimiter.
_NEVER_SPLIT = ("postmaster", "mailer-daemon")


def split_addr(localpart: str, delimiters: str,
               double_bounce_sender: str = "double-bounce") -> tuple[str, str, str] | None:
    """Split "user+ext" into (user, delimiter, ext), or None if it does not split.

    Postfix's split_addr(): recipient_delimiter is a set of characters
    (Postfix 2.11 and later) and the first occurrence of any of them splits.
    postmaster, MAILER-DAEMON and $double_bounce_sender are never split;
    neither are owner-foo and foo-request (Sendmail compatibility), nor a
    local part that would become empty.
    """
    if not delimiters or not localpart:
        return None
    low = localpart.lower()
    if low in _NEVER_SPLIT or low == double_bounce_sender.lower():
        return None
    if low.startswith("owner-") or (len(low) > 8 and low.endswith("-request")):
        return None
    for i, ch in enumerate(localpart):
        if ch in delimiters:
            if i == 0:
                return None
            return localpart[:i], ch, localpart[i + 1:]
    return None


def _split_at(address: str) -> tuple[str, str | None]:
    at = address.rfind("@")
    if at < 0:
        return address, None
    return address[:at], address[at + 1:]


def parent_style(parent_domain_matches_subdomains: Sequence[str] | str, feature: str) -> bool:
    """True when feature (e.g. "smtpd_access_maps") is listed in
    parent_domain_matches_subdomains: "example.com" then matches its
    subdomains; otherwise subdomains match only ".example.com"."""
    if isinstance(parent_domain_matches_subdomains, str):
        items = parent_domain_matches_subdomains.replace(",", " ").split()
    else:
        items = parent_domain_matches_subdomains
    return feature in items


def _domain_patterns(domain: str, parent: bool) -> list[str]:
    """domain, then its parents as "b.c"/"c" (parent=True) or ".b.c"/".c"."""
    out = [domain]
    name = domain
    while True:
        dot = name.find(".", 1)      # strchr(name + 1, '.') as smtpd_check.c
        if dot < 0:
            return out
        name = name[dot + 1:] if parent else name[dot:]
        out.append(name)


def access_host(maps, hostname: str, parent: bool = True, *, first_partial: bool = False) -> Match | None:
    """access(5) HOST NAME PATTERNS: domain.tld, then parent domains.

    parent: whether smtpd_access_maps is in parent_domain_matches_subdomains
    (Postfix's default): parents are looked up as "example.com", else as
    ".example.com". The full name goes to every table, parents only to
    fixed-string tables.
    """
    maps = _as_maps(maps)
    for i, name in enumerate(_domain_patterns(hostname, parent)):
        found = maps.find(name, partial=first_partial or i > 0)
        if found:
            return found
    return None


def ip_patterns(address: str) -> list[str]:
    """The full address, then shorter prefixes: "1.2.3.4", "1.2.3", "1.2", "1";
    for IPv6 truncate at ':' the same way (access(5) HOST NAME/ADDRESS PATTERNS;
    smtpd_check.c check_addr_access() splits at the rightmost delimiter)."""
    delim = ":" if ":" in address else "."
    out = [address]
    while True:
        cut = address.rfind(delim)
        if cut <= 0:
            break
        address = address[:cut]
        out.append(address)
    return out


def access_ip(maps, address: str) -> Match | None:
    """access(5) address patterns: full IP address, then truncated prefixes
    (those only in fixed-string tables; use cidr tables for netmasks)."""
    maps = _as_maps(maps)
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    for i, key in enumerate(ip_patterns(address)):
        found = maps.find(key, partial=i > 0)
        if found:
            return found
    return None


def access_address(maps, address: str, delimiters: str = "", parent: bool = True,
                   double_bounce_sender: str = "double-bounce") -> Match | None:
    """access(5) EMAIL ADDRESS PATTERNS with EMAIL ADDRESS EXTENSION:

        user+foo@domain, user@domain, domain (and parents), user+foo@, user@

    The null address is looked up as given (the caller substitutes
    smtpd_null_access_lookup_key, "<>" by default).
    """
    maps = _as_maps(maps)
    local, domain = _split_at(address)
    split = split_addr(local, delimiters, double_bounce_sender)
    found = maps.find(address)
    if found:
        return found
    if split and domain is not None:
        found = maps.find(f"{split[0]}@{domain}", partial=True)
        if found:
            return _with_ext(found, split)
    if domain:
        found = access_host(maps, domain, parent, first_partial=True)
        if found:
            return found
    if domain is not None:
        found = maps.find(f"{local}@", partial=True)
        if found:
            return found
        if split:
            found = maps.find(f"{split[0]}@", partial=True)
            if found:
                return _with_ext(found, split)
    return None


def _with_ext(found: Match, split: tuple[str, str, str]) -> Match:
    return Match(found.key, found.value, found.table, split[2], split[1])


def alias_lookup(maps, name: str, delimiters: str = "",
                 double_bounce_sender: str = "double-bounce") -> Match | None:
    """aliases(5): the local part (no domain), lowercased by local(8); when
    not found and it has an extension, the local part without it."""
    maps = _as_maps(maps)
    name = name.lower()   # aliases(5) CASE FOLDING: local(8) always folds
    found = maps.find(name)
    if found:
        return found
    split = split_addr(name, delimiters, double_bounce_sender)
    if split:
        found = maps.find(split[0])
        if found:
            return _with_ext(found, split)
    return None


def virtual_lookup(maps, address: str, delimiters: str = "", local_domain: bool = False,
                   double_bounce_sender: str = "double-bounce") -> Match | None:
    """virtual(5) and canonical(5) TABLE SEARCH ORDER with ADDRESS EXTENSION:

        user+foo@domain, user@domain, user+foo, user, @domain

    The local part alone ("user+foo", "user") is tried only when local_domain
    is true: the caller knows whether domain is $myorigin, in $mydestination,
    $inet_interfaces or $proxy_interfaces. An address without a domain is
    looked up as given, then without its extension.
    """
    maps = _as_maps(maps)
    local, domain = _split_at(address)
    split = split_addr(local, delimiters, double_bounce_sender)
    found = maps.find(address)
    if found:
        return found
    if domain is None:
        if split:
            found = maps.find(split[0], partial=True)
            return _with_ext(found, split) if found else None
        return None
    if split:
        found = maps.find(f"{split[0]}@{domain}", partial=True)
        if found:
            return _with_ext(found, split)
    if local_domain:
        found = maps.find(local, partial=True)
        if found:
            return found
        if split:
            found = maps.find(split[0], partial=True)
            if found:
                return _with_ext(found, split)
    found = maps.find(f"@{domain}", partial=True)
    if found:
        # The whole local part, extension included, is unmatched here.
        return found
    return None


canonical_lookup = virtual_lookup


def transport_lookup(maps, address: str, delimiters: str = "", parent: bool = False,
                     double_bounce_sender: str = "double-bounce") -> Match | None:
    """transport(5) TABLE SEARCH ORDER:

        user+extension@domain, user@domain, domain, parent domains, *

    parent: whether transport_maps is in parent_domain_matches_subdomains
    (not by default, so subdomains match ".domain"). "*" matches any address.
    """
    maps = _as_maps(maps)
    local, domain = _split_at(address)
    found = maps.find(address)
    if found:
        return found
    split = split_addr(local, delimiters, double_bounce_sender)
    if split and domain is not None:
        found = maps.find(f"{split[0]}@{domain}", partial=True)
        if found:
            return _with_ext(found, split)
    if domain:
        found = access_host(maps, domain, parent, first_partial=True)
        if found:
            return found
    return maps.find("*", partial=True)
