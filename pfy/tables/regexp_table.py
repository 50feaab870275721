"""regexp:/path and pcre:/path - regexp_table(5) and pcre_table(5).

Both read the same file syntax (Postfix's dict_regexp and dict_pcre):

    /pattern/flags result       first matching rule wins
    !/pattern/flags result      the rule applies when pattern does NOT match
    if /pattern/flags ... endif (and "if !/pattern/"), nesting allowed

and substitute $1, ${1}, $(1) (and $$ for "$") in the result. A bad rule is
skipped with a warning naming the file and line, as Postfix does.

pcre patterns are compiled with Python's re, which implements the Perl
syntax PCRE also follows. regexp patterns are POSIX regular expressions
(extended by default, basic with the x flag toggled) and are translated into
Python's syntax by _posix_to_python(). Known limits (also in the man pages):
- POSIX leftmost-longest alternation is not emulated: Python takes the first
  alternative that matches, so "(a|ab)" may capture less than POSIX would.
  Whether a rule matches is the same; only $n substitutions can differ.
- pcre: \\Q...\\E, \\K, \\R, \\h, (?|...), recursion and callouts are not
  supported (a rule using them is skipped with a warning); the U (ungreedy)
  and X flags are not supported either. E (DOLLAR_ENDONLY) and A (ANCHORED)
  are.
"""

from __future__ import annotations

import re
import warnings

from pfy.tables._base import FileWatch, Table, TableError, inline_rules, logical_lines, read_source, warn

__all__ = ["RegexpTable", "posix_to_python"]


class _Rule:
    __slots__ = ("regex", "negate", "result", "is_if", "skip_to", "lineno")

    def __init__(self, regex, negate, result, is_if, lineno):
        self.regex, self.negate, self.result = regex, negate, result
        self.is_if, self.lineno = is_if, lineno
        self.skip_to = None


class _RuleError(Exception):
    pass


# regexp_table(5): "${n}" or "$(n)" when not followed by whitespace.
_SUBST = re.compile(r"\$(?:(\d+)|\{(\d+)\}|\((\d+)\)|(\$))")


class RegexpTable(Table):
    pattern = True

    def __init__(self, kind: str, name: str):
        self.type, self.name = kind, name
        self.label = f"{kind} map {name}"
        rules = inline_rules(name)
        self.watch = None
        if rules is None:
            self.watch = FileWatch(name)
            rules = read_source(name)
        self.rules = self._parse(rules)

    # ---- parsing -------------------------------------------------------

    def _parse(self, lines) -> list[_Rule]:
        rules: list[_Rule] = []
        open_ifs: list[_Rule] = []
        for lineno, line in logical_lines(lines, self.name):
            try:
                rule = self._parse_line(line, lineno)
            except _RuleError as err:
                warn(f"{self.label}, line {lineno}: {err}")
                continue
            if rule == "endif":
                if not open_ifs:
                    warn(f"{self.label}, line {lineno}: ignoring ENDIF without matching IF")
                    continue
                open_ifs.pop().skip_to = len(rules)
                continue
            rules.append(rule)
            if rule.is_if:
                open_ifs.append(rule)
        for rule in reversed(open_ifs):
            warn(f"{self.label}, line {rule.lineno}: IF has no matching ENDIF")
            rule.skip_to = len(rules)
        return rules

    def _parse_line(self, line: str, lineno: int):
        head = line[:5].lower()
        if head == "endif" and not line[5:6].isalnum():
            if line[5:].strip():
                warn(f"{self.label}, line {lineno}: ignoring extra text after ENDIF")
            return "endif"
        is_if = head[:2] == "if" and not line[2:3].isalnum() and line[2:3] != ""
        rest = line[2:].lstrip() if is_if else line
        negate = rest.startswith("!")
        if negate:
            rest = rest[1:].lstrip()
        if not rest:
            raise _RuleError("no closing regexp delimiter \"\": skipping this rule")
        delim, i = rest[0], 1
        while i < len(rest):
            if rest[i] == "\\":
                if i + 1 >= len(rest):
                    break
                i += 1
            elif rest[i] == delim:
                break
            i += 1
        if i >= len(rest):
            raise _RuleError(f"no closing regexp delimiter \"{delim}\": skipping this rule")
        source = rest[1:i]
        j = i + 1
        while j < len(rest) and not rest[j].isspace():
            j += 1
        flags = rest[i + 1:j]
        result = rest[j:].strip()
        regex = self._compile(source, flags)
        if is_if:
            if result:
                warn(f"{self.label}, line {lineno}: ignoring extra text after IF")
            return _Rule(regex, negate, None, True, lineno)
        if not result:
            warn(f"{self.label}, line {lineno}: no replacement text: using empty string")
        for m in _SUBST.finditer(result):
            if m.group(4):
                continue
            if negate:
                raise _RuleError("$number found in negative match replacement text: skipping this rule")
            n = int(m.group(1) or m.group(2) or m.group(3))
            if n > regex.groups:
                raise _RuleError(f"out of range replacement index \"{n}\": skipping this rule")
        return _Rule(regex, negate, result, False, lineno)

    def _compile(self, source: str, flags: str):
        if self.type == "pcre":
            return _compile_pcre(source, flags)
        return _compile_regexp(source, flags)

    # ---- lookup --------------------------------------------------------

    def lookup(self, key: str) -> str | None:
        if self.watch is not None and self.watch.changed():
            self.rules = self._parse(read_source(self.name))
        rules = self.rules
        i, n = 0, len(rules)
        while i < n:
            rule = rules[i]
            m = rule.regex.search(key)
            if rule.is_if:
                if (m is None) != rule.negate:
                    i = rule.skip_to
                    continue
            elif rule.negate:
                if m is None:
                    return rule.result.replace("$$", "$")
            elif m is not None:
                return _substitute(rule.result, m)
            i += 1
        return None


def _substitute(result: str, m: re.Match) -> str:
    if "$" not in result:
        return result

    def repl(s: re.Match) -> str:
        if s.group(4):
            return "$"
        return m.group(int(s.group(1) or s.group(2) or s.group(3))) or ""

    return _SUBST.sub(repl, result)


# ---- pcre ---------------------------------------------------------------

_PCRE_UNSUPPORTED = re.compile(r"\\[QEKRhHvVNXC]|\(\?\||\(\?R\)|\(\?\d|\(\?C|\(\*")


def _compile_pcre(source: str, flags: str):
    # pcre_table(5) defaults: i on, s (DOTALL) on, m x A E U off.
    icase, multi, dotall, extended, anchored, dollar_end = True, False, True, False, False, False
    for f in flags:
        if f == "i":
            icase = not icase
        elif f == "m":
            multi = not multi
        elif f == "s":
            dotall = not dotall
        elif f == "x":
            extended = not extended
        elif f == "A":
            anchored = not anchored
        elif f == "E":
            dollar_end = not dollar_end
        elif f in "UX":
            raise _RuleError(f"pcre option \"{f}\" is not supported by pfy: skipping this rule")
        else:
            raise _RuleError(f"unknown regexp option \"{f}\": skipping this rule")
    bad = _PCRE_UNSUPPORTED.search(source)
    if bad:
        raise _RuleError(f"unsupported PCRE construct \"{bad.group()}\" at offset {bad.start()}: "
                         f"skipping this rule")
    # PCRE's (?<name>...) is Python's (?P<name>...); PCRE knows POSIX
    # classes inside brackets ("[[:digit:]]"), Python does not.
    pattern = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", source)
    pattern = _POSIX_CLASS.sub(lambda m: _CLASSES[m.group(1)], pattern)
    if anchored:
        pattern = r"\A(?:" + pattern + ")"
    if dollar_end and not multi:
        pattern = _replace_outside_classes(pattern, "$", r"\Z")
    re_flags = (re.I if icase else 0) | (re.M if multi else 0) | (re.S if dotall else 0) \
        | (re.X if extended else 0)
    try:
        with warnings.catch_warnings():
            # "Possible nested set": Python's hint about future syntax, not an error.
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(pattern, re_flags)
    except re.error as err:
        raise _RuleError(f"error in regex at offset {err.pos}: {err.msg}") from None


_POSIX_CLASS = re.compile(r"\[:(alpha|digit|alnum|upper|lower|space|blank|punct|print|graph|cntrl|xdigit):\]")


def _replace_outside_classes(pattern: str, char: str, repl: str) -> str:
    out, i, n, in_class = [], 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "^":
                out.append("[^")
                i += 2
                if pattern[i:i + 1] == "]":
                    out.append("]")
                    i += 1
                continue
        elif c == char:
            out.append(repl)
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


# ---- POSIX regex ----------------------------------------------------------

def _compile_regexp(source: str, flags: str):
    # regexp_table(5) defaults: i (REG_ICASE) on, x (REG_EXTENDED) on, m (REG_NEWLINE) off.
    icase, extended, newline = True, True, False
    for f in flags:
        if f == "i":
            icase = not icase
        elif f == "x":
            extended = not extended
        elif f == "m":
            newline = not newline
        else:
            raise _RuleError(f"unknown regexp option \"{f}\": skipping this rule")
    try:
        pattern = posix_to_python(source, extended=extended, newline=newline)
        re_flags = (re.I if icase else 0) | (re.M if newline else re.S)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(pattern, re_flags)
    except re.error as err:
        raise _RuleError(_posix_message(err)) from None
    except ValueError as err:
        raise _RuleError(str(err)) from None


def _posix_message(err: re.error) -> str:
    # glibc regerror() texts for the common mistakes, so warnings read as Postfix's.
    msg = err.msg
    if "missing )" in msg:
        return "Unmatched ( or \\("
    if "unbalanced parenthesis" in msg:
        return "Unmatched ) or \\)"
    if "unterminated character set" in msg:
        return "Unmatched [, [^, [:, [., or [="
    if "nothing to repeat" in msg or "multiple repeat" in msg:
        return "Invalid preceding regular expression"
    if "bad character range" in msg:
        return "Invalid range end"
    if "invalid group reference" in msg:
        return "Invalid back reference"
    return msg


_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z",
    "lower": "a-z", "space": " \\t\\n\\r\\f\\v", "blank": " \\t",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "print": " -~", "graph": "!-~", "cntrl": "\\x00-\\x1f\\x7f", "xdigit": "0-9A-Fa-f",
}

# GNU regex operators after a backslash (regex(7), glibc), in Python terms.
_GNU_ESCAPES = {
    "w": r"\w", "W": r"\W", "s": r"\s", "S": r"\S", "b": r"\b", "B": r"\B",
    "<": r"\b(?=\w)", ">": r"\b(?<=\w)", "`": r"\A", "'": r"\Z",
}


def posix_to_python(src: str, extended: bool = True, newline: bool = False) -> str:
    """Translate a POSIX (GNU) regular expression into Python re syntax.

    extended: ERE (REG_EXTENDED) rather than BRE. newline: REG_NEWLINE, in
    which '.' and negated brackets do not match a newline (the caller adds
    re.M). Without REG_NEWLINE, '$' matches only at the very end (Python's
    '$' would also match before a final newline).
    """
    out: list[str] = []
    i, n = 0, len(src)
    at_start = True         # where a repetition operator is a literal
    while i < n:
        c = src[i]
        if c == "[":
            cls, i = _bracket(src, i, newline)
            out.append(cls)
            at_start = False
            continue
        if c == "\\":
            i += 1
            if i >= n:
                raise ValueError("Trailing backslash")
            e = src[i]
            i += 1
            if not extended and e in "(){}|+?":
                # BRE: \( \) \{ \} are operators; GNU adds \| \+ \?.
                if e in "+?*" and at_start:
                    out.append(re.escape(e))
                    continue
                out.append(e)
                at_start = e in "(|"
                continue
            if e.isdigit() and e != "0":
                out.append("\\" + e)
            elif e in _GNU_ESCAPES:
                out.append(_GNU_ESCAPES[e])
            else:
                out.append(re.escape(e))
            at_start = False
            continue
        if extended and c in "()|":
            out.append(c)
            at_start = c != ")"
            i += 1
            continue
        if extended and c in "*+?" or (not extended and c == "*"):
            out.append(re.escape(c) if at_start else c)
            at_start = False
            i += 1
            continue
        if extended and c == "{":
            m = re.match(r"\{\d+(,\d*)?\}", src[i:])
            if m and not at_start:
                out.append(m.group())
                i += m.end()
            else:
                out.append(r"\{")
                i += 1
            continue
        if c == "^":
            # ERE: an anchor anywhere; BRE: only at the start.
            out.append("^" if extended or at_start else r"\^")
            i += 1
            continue
        if c == "$":
            end_of_bre = i + 1 == n or src[i + 1:i + 3] in ("\\)", "\\|")
            if extended or end_of_bre:
                out.append("$" if newline else r"\Z")
            else:
                out.append(r"\$")
            i += 1
            at_start = False
            continue
        if c == ".":
            out.append(".")
        else:
            out.append(re.escape(c))
        at_start = False
        i += 1
    return "".join(out)


def _bracket(src: str, i: int, newline: bool) -> tuple[str, int]:
    """Translate the bracket expression starting at src[i] == '['."""
    n = len(src)
    i += 1
    negate = i < n and src[i] == "^"
    if negate:
        i += 1
    parts: list[str] = []
    first = True
    while True:
        if i >= n:
            raise ValueError("Unmatched [, [^, [:, [., or [=")
        c = src[i]
        if c == "]" and not first:
            i += 1
            break
        first = False
        if c == "[" and i + 1 < n and src[i + 1] in ":=.":
            kind = src[i + 1]
            end = src.find(kind + "]", i + 2)
            if end < 0:
                raise ValueError("Unmatched [, [^, [:, [., or [=")
            word = src[i + 2:end]
            i = end + 2
            if kind == ":":
                if word not in _CLASSES:
                    raise ValueError("Invalid character class name")
                parts.append(_CLASSES[word])
            else:
                parts.append(re.escape(word))
            continue
        # In a bracket a backslash is an ordinary character (POSIX).
        if c in "\\]^[-":
            if c == "-" and parts and i + 1 < n and src[i + 1] != "]":
                parts.append("-")
            else:
                parts.append("\\" + c)
        else:
            parts.append(c)
        i += 1
    body = "".join(parts)
    if negate:
        return "[^" + body + ("\\n" if newline else "") + "]", i
    return "[" + body + "]", i


def open_regexp(kind, name, cfg, fold):
    return RegexpTable("regexp", name)


def open_pcre(kind, name, cfg, fold):
    return RegexpTable("pcre", name)
