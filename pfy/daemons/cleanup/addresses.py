"""cleanup's address transformations: canonical, masquerade, virtual alias.

Pure functions over internal-form addresses; tables are search.Maps and the
"is this domain local" question is a callable, so tests need no daemon.
"""

from __future__ import annotations

from pfy.smtp.address import split_address, unquote_local
from pfy.tables.search import canonical_lookup, virtual_lookup

__all__ = ["map11", "masquerade", "expand_virtual", "ExpansionError", "split_values"]

# cleanup_map11.c: MAX_RECURSION 10 rounds of canonical mapping.
MAP11_RECURSION = 10


def _propagate(result: str, found, propagate: bool, delimiter: str) -> str:
    """propagate_unmatched_extensions: put the extension the lookup removed
    back on the result's local part (canonical(5) ADDRESS EXTENSION)."""
    if not propagate or not found.extension:
        return result
    local, domain = split_address(result)
    local = f"{local}{found.delimiter or delimiter[:1]}{found.extension}"
    return local if domain is None else f"{local}@{domain}"


def map11(maps_list, address: str, is_local, delimiter: str = "",
          propagate: bool = True) -> str:
    """canonical(5): one address to one address, repeated until stable.
    Raises TableTempFail (caller defers)."""
    if not address:
        return address
    for _ in range(MAP11_RECURSION):
        changed = False
        for maps in maps_list:
            if not maps:
                continue
            local, domain = split_address(address)
            found = canonical_lookup(maps, address, delimiter,
                                     local_domain=domain is None or is_local(domain))
            if found is None:
                continue
            result = unquote_local(found.value.strip())
            if found.key.startswith("@") and result.startswith("@"):
                # "@domain @other": keep the local part (canonical(5)).
                result = local + result
            result = _propagate(result, found, propagate, delimiter)
            if result != address:
                address = result
                changed = True
        if not changed:
            break
    return address


def masquerade(address: str, domains: list[str], exceptions: set[str]) -> str:
    """masquerade_domains: strip subdomains ("user@host.example.com" ->
    "user@example.com"); "!domain" stops masquerading of that domain;
    masquerade_exceptions lists local parts left alone (cleanup_masq.c)."""
    local, domain = split_address(address)
    if domain is None or not domains:
        return address
    if local.lower() in exceptions:
        return address
    dom = domain.lower()
    for entry in domains:
        negate = entry.startswith("!")
        masq = entry.lstrip("!").lower()
        if not masq:
            continue
        if dom == masq:
            return address          # the domain itself: nothing to strip
        if dom.endswith("." + masq):
            return address if negate else f"{local}@{masq}"
    return address


class ExpansionError(Exception):
    """Virtual alias expansion over a limit: defer the message (4.3.0)."""


def split_values(value: str) -> list[str]:
    """virtual(5) results: addresses separated by commas and/or white space,
    commas inside quotes kept."""
    out, cur, quote = [], [], False
    for ch in value:
        if ch == '"':
            quote = not quote
        if not quote and (ch == "," or ch in " \t"):
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def expand_virtual(maps, address: str, is_local, delimiter: str = "",
                   expansion_limit: int = 1000, recursion_limit: int = 1000,
                   propagate: bool = True) -> list[str]:
    """virtual(5) alias expansion, recursive and loop-safe (cleanup_map1n.c):
    an address that maps to itself, or that was already expanded on the
    way, is final; more than expansion_limit results or a chain deeper
    than recursion_limit raises ExpansionError."""
    if not maps:
        return [address]
    final: list[str] = []
    seen_final: set[str] = set()
    # (address, depth, ancestors) - ancestors stop loops a -> b -> a.
    stack = [(address, 0, frozenset())]
    while stack:
        addr, depth, ancestors = stack.pop()
        if depth > recursion_limit:
            raise ExpansionError(
                f"unreasonable virtual_alias_maps map nesting for {address}")
        _, domain = split_address(addr)
        found = virtual_lookup(maps, addr, delimiter,
                               local_domain=domain is None or is_local(domain))
        targets = [] if found is None else split_values(found.value)
        if found is None or addr in ancestors:
            if addr not in seen_final:
                seen_final.add(addr)
                final.append(addr)
            continue
        children = []
        for target in targets:
            target = _propagate(unquote_local(target), found, propagate, delimiter)
            if target == addr:
                # An alias that includes itself: deliver to it as is.
                if addr not in seen_final:
                    seen_final.add(addr)
                    final.append(addr)
                continue
            children.append((target, depth + 1, ancestors | {addr}))
        stack.extend(reversed(children))
        if len(final) + len(stack) > expansion_limit:
            raise ExpansionError(
                f"unreasonable virtual_alias_maps map expansion size for {address}")
    return final
