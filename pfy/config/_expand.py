"""$name expansion of parameter values, as Postfix's mac_expand(3).

Forms (postconf(5), "Parameter expansion"):
    $name  ${name}  $(name)                 the value of name ("" if undefined)
    $$                                      a literal $
    ${name?value}   ${name?{value}}         value if name is set and not empty
    ${name:value}   ${name:{value}}         value if name is unset or empty
    ${name?{value1}:{value2}}               either, Postfix 3.0 and later
    ${{text1} op {text2} ? {v1} : {v2}}     op: == != (text), < <= > >=
                                            (decimal numbers), <level <=level
                                            >level >=level (compatibility levels)
The selected text is itself expanded.  Pure: the caller supplies lookup().
"""

from collections.abc import Callable

__all__ = ["ExpandError", "expand", "split_list", "compare_levels"]

# mac_expand.c: a recursion deeper than this is a loop, reported as
# "unreasonable macro call nesting".
MAX_NESTING = 100

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class ExpandError(ValueError):
    """Bad macro syntax or a loop; str() is Postfix's wording."""


Lookup = Callable[[str], "str | None"]


def expand(text: str, lookup: Lookup, *, recurse: bool = True,
           undefined: Callable[[str], None] | None = None, _level: int = 0) -> str:
    """Expand $name references in text; lookup(name) gives raw values.

    With recurse, the values found are expanded in turn (what daemons and
    `postconf -x` see).  undefined(name) is told of each unset name.
    """
    if "$" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$":
            j = text.find("$", i)
            if j < 0:
                j = n
            out.append(text[i:j])
            i = j
            continue
        i += 1
        if i >= n:
            raise ExpandError(f'empty macro name: "{text}"')
        c = text[i]
        if c == "$":
            out.append("$")
            i += 1
        elif c in "{(":
            close = _matching(text, i)
            if close < 0:
                raise ExpandError(f'unbalanced {{ or ( in "{text}"' if c == "{"
                                  else f'unbalanced ( in "{text}"')
            body = text[i + 1:close]
            i = close + 1
            out.append(_expand_braced(body, lookup, recurse, undefined, _level))
        elif c in _NAME_CHARS:
            j = i
            while j < n and text[j] in _NAME_CHARS:
                j += 1
            out.append(_value(text[i:j], lookup, recurse, undefined, _level))
            i = j
        else:
            raise ExpandError(f'empty macro name: "{text}"')
    return "".join(out)


def _matching(text: str, i: int) -> int:
    """Index of the bracket closing text[i] ('{' or '('), or -1."""
    open_c = text[i]
    close_c = "}" if open_c == "{" else ")"
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_c:
            depth += 1
        elif text[j] == close_c:
            depth -= 1
            if depth == 0:
                return j
    return -1


def _value(name: str, lookup: Lookup, recurse: bool, undefined, level: int) -> str:
    value = lookup(name)
    if value is None:
        if undefined is not None:
            undefined(name)
        return ""
    if recurse and "$" in value:
        if level >= MAX_NESTING:
            raise ExpandError(f'unreasonable macro call nesting: "{name}"')
        return expand(value, lookup, recurse=True, undefined=undefined, _level=level + 1)
    return value


def _sub(text: str, lookup: Lookup, recurse: bool, undefined, level: int) -> str:
    # Text selected by ?, : or a comparison is expanded whether or not recurse
    # is set: it is part of the value being expanded, not a parameter's value.
    if level >= MAX_NESTING:
        raise ExpandError(f'unreasonable macro call nesting: "{text}"')
    return expand(text, lookup, recurse=recurse, undefined=undefined, _level=level + 1)


def _take_group(s: str, what: str) -> tuple[str, str]:
    """Split '{text} rest' into (text, rest), both stripped."""
    s = s.lstrip()
    if not s.startswith("{"):
        raise ExpandError(f'"{{" expected at start of "{s}" in "{what}"')
    close = _matching(s, 0)
    if close < 0:
        raise ExpandError(f'unbalanced {{ in "{what}"')
    return s[1:close].strip(), s[close + 1:].lstrip()


def _branches(rest: str, what: str) -> tuple[str, str | None]:
    """'{a}' or '{a}:{b}' (after a '?') -> (a, b or None)."""
    a, rest = _take_group(rest, what)
    if not rest:
        return a, None
    if rest[0] != ":":
        raise ExpandError(f'":" expected in "{what}"')
    b, rest = _take_group(rest[1:], what)
    if rest:
        raise ExpandError(f'garbage after "}}" in "{what}"')
    return a, b


def _expand_braced(body: str, lookup: Lookup, recurse: bool, undefined, level: int) -> str:
    stripped = body.lstrip()
    if stripped.startswith("{"):
        return _relational(stripped, lookup, recurse, undefined, level)
    j = 0
    while j < len(body) and body[j] in _NAME_CHARS:
        j += 1
    name, rest = body[:j], body[j:]
    if not name:
        raise ExpandError(f'empty macro name: "{body}"')
    if not rest:
        return _value(name, lookup, recurse, undefined, level)
    op, arg = rest[0], rest[1:]
    if op not in "?:":
        raise ExpandError(f'unknown operator "{op}" in "${{{body}}}"')
    raw = lookup(name)
    if raw is None and undefined is not None:
        undefined(name)
    # Postfix tests the value as found, before expansion: "set and not empty".
    is_set = bool(raw)
    if arg.lstrip().startswith("{"):
        yes, no = _branches(arg, body)
        if op == ":" and no is not None:
            raise ExpandError(f'garbage after "}}" in "{body}"')
        chosen = (yes if is_set else no) if op == "?" else (yes if not is_set else None)
    else:
        chosen = arg if (is_set if op == "?" else not is_set) else None
    if chosen is None:
        return ""
    return _sub(chosen, lookup, recurse, undefined, level)


_OPS = ("==", "!=", "<=level", ">=level", "<level", ">level", "<=", ">=", "<", ">")


def _relational(body: str, lookup: Lookup, recurse: bool, undefined, level: int) -> str:
    left, rest = _take_group(body, body)
    for op in _OPS:
        if rest.startswith(op):
            rest = rest[len(op):]
            break
    else:
        raise ExpandError(f'unknown operator in "{body}"')
    right, rest = _take_group(rest, body)
    if not rest.startswith("?"):
        raise ExpandError(f'"?" expected in "{body}"')
    yes, no = _branches(rest[1:], body)
    lv = _sub(left, lookup, recurse, undefined, level)
    rv = _sub(right, lookup, recurse, undefined, level)
    if op in ("==", "!="):
        truth = (lv == rv) == (op == "==")
    elif op.endswith("level"):
        cmp = compare_levels(lv, rv)
        truth = _cmp_truth(op[:-5], cmp)
    else:
        try:
            a, b = int(lv), int(rv)
        except ValueError:
            raise ExpandError(f'"{lv}" or "{rv}" is not a decimal number in "{body}"') from None
        truth = _cmp_truth(op, (a > b) - (a < b))
    chosen = yes if truth else no
    return "" if chosen is None else _sub(chosen, lookup, recurse, undefined, level)


def _cmp_truth(op: str, cmp: int) -> bool:
    return {"<": cmp < 0, "<=": cmp <= 0, ">": cmp > 0, ">=": cmp >= 0}[op]


def compare_levels(a: str, b: str) -> int:
    """Compare compatibility levels "major[.minor[.patch]]" (postconf(5),
    compatibility_level): -1, 0 or 1.  An empty level is 0."""
    def parts(s: str) -> tuple[int, ...]:
        s = s.strip() or "0"
        try:
            return tuple(int(p) for p in s.split("."))
        except ValueError:
            raise ExpandError(f'malformed compatibility level: "{s}"') from None
    pa, pb = parts(a), parts(b)
    width = max(len(pa), len(pb))
    pa += (0,) * (width - len(pa))
    pb += (0,) * (width - len(pb))
    return (pa > pb) - (pa < pb)


_SEPARATORS = ", \t\r\n"


def split_list(value: str) -> list[str]:
    """Split a list value on commas and whitespace, as Postfix's mystrtokq
    with "{}" grouping: a token ends at a separator outside braces; a token
    that is one whole "{ ... }" group loses its braces and outer spaces."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        if value[i] in _SEPARATORS:
            i += 1
            continue
        j, depth = i, 0
        while j < n and (depth > 0 or value[j] not in _SEPARATORS):
            if value[j] == "{":
                depth += 1
            elif value[j] == "}" and depth > 0:
                depth -= 1
            j += 1
        token = value[i:j]
        if token.startswith("{") and token.endswith("}") and _matching(token, 0) == len(token) - 1:
            token = token[1:-1].strip()
        out.append(token)
        i = j
    return out
