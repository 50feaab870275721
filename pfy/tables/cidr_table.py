"""cidr:/path - cidr_table(5): IPv4 and IPv6 network/prefix patterns.

    network/prefix   result      (or a bare address: an exact match)
    !network/prefix  result      applies when the address is NOT in the network
    if network/prefix ... endif  (and "if !network/prefix"), nesting allowed

The first matching rule wins. A search string that is not an IP address
matches nothing, not even a negated rule; an IPv4 address never matches an
IPv6 pattern, negated or not (Postfix's dict_cidr).
"""

from __future__ import annotations

import ipaddress

from pfy.tables._base import FileWatch, Table, inline_rules, logical_lines, read_source, warn

__all__ = ["CidrTable"]


class _RuleError(Exception):
    pass


class _Rule:
    __slots__ = ("version", "net", "mask", "negate", "result", "is_if", "skip_to", "lineno")


def _parse_pattern(text: str) -> tuple[int, int, int]:
    """(ip version, network as int, mask as int) of "addr" or "addr/len"."""
    addr, slash, length = text.partition("/")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise _RuleError(f"bad address pattern: \"{text}\": skipping this rule") from None
    bits = ip.max_prefixlen
    if slash:
        if not length.isdigit() or int(length) > bits:
            raise _RuleError(f"bad mask length in \"{text}\": skipping this rule")
        plen = int(length)
    else:
        plen = bits
    mask = ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)
    value = int(ip)
    if value & ~mask:
        net = ipaddress.ip_address(value & mask)
        raise _RuleError(f"non-null host address bits in \"{text}\", perhaps you should use "
                         f"\"{net}/{plen}\" instead: skipping this rule")
    return ip.version, value, mask


class CidrTable(Table):
    pattern = True

    def __init__(self, name: str):
        self.type, self.name = "cidr", name
        self.label = f"cidr map {name}"
        rules = inline_rules(name)
        self.watch = None
        if rules is None:
            self.watch = FileWatch(name)
            rules = read_source(name)
        self.rules = self._parse(rules)

    def _parse(self, lines) -> list[_Rule]:
        rules: list[_Rule] = []
        open_ifs: list[_Rule] = []
        for lineno, line in logical_lines(lines, self.name):
            low = line.lower()
            if low.startswith("endif") and not line[5:6].isalnum():
                if line[5:].strip():
                    warn(f"{self.label}, line {lineno}: ignoring extra text after ENDIF")
                if not open_ifs:
                    warn(f"{self.label}, line {lineno}: ignoring ENDIF without matching IF")
                else:
                    open_ifs.pop().skip_to = len(rules)
                continue
            is_if = low.startswith("if") and line[2:3].isspace()
            rest = line[2:].lstrip() if is_if else line
            negate = rest.startswith("!")
            if negate:
                rest = rest[1:].lstrip()
            fields = rest.split(None, 1)
            pattern = fields[0] if fields else ""
            result = fields[1].strip() if len(fields) > 1 else ""
            try:
                version, net, mask = _parse_pattern(pattern)
                if not is_if and not result:
                    raise _RuleError("no lookup result: skipping this rule")
            except _RuleError as err:
                warn(f"{self.label}, line {lineno}: {err}")
                continue
            if is_if and result:
                warn(f"{self.label}, line {lineno}: ignoring extra text after IF")
            rule = _Rule()
            rule.version, rule.net, rule.mask, rule.negate = version, net, mask, negate
            rule.result, rule.is_if, rule.skip_to, rule.lineno = result, is_if, None, lineno
            rules.append(rule)
            if is_if:
                open_ifs.append(rule)
        for rule in reversed(open_ifs):
            warn(f"{self.label}, line {rule.lineno}: IF has no matching ENDIF")
            rule.skip_to = len(rules)
        return rules

    def lookup(self, key: str) -> str | None:
        if self.watch is not None and self.watch.changed():
            self.rules = self._parse(read_source(self.name))
        try:
            ip = ipaddress.ip_address(key)
        except ValueError:
            return None
        version, value = ip.version, int(ip)
        rules = self.rules
        i, n = 0, len(rules)
        while i < n:
            rule = rules[i]
            if rule.version != version:
                # A family mismatch never matches, negated or not.
                i = rule.skip_to if rule.is_if else i + 1
                continue
            inside = (value & rule.mask) == rule.net
            if rule.is_if:
                if inside == rule.negate:
                    i = rule.skip_to
                    continue
            elif inside != rule.negate:
                return rule.result
            i += 1
        return None


def open_cidr(kind, name, cfg, fold):
    return CidrTable(name)
