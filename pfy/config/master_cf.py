"""master.cf: one service per logical line, as master(5) describes.

    service type private unpriv chroot wakeup maxproc command [args...]

Logical lines follow main.cf's rules (comments, whitespace continuation).
"-" in a column means the default: private y, unpriv y, chroot n (Postfix
3.x's built-in default), wakeup 0, maxproc $default_process_limit.  An
argument "{ text }" is one argument (master(5), Postfix 3.0); "-o name=value"
and "-o { name = value }" override main.cf for that service.
"""

from dataclasses import dataclass, field

from pfy.config import ConfigError
from pfy.config._maincf import logical_lines

__all__ = ["MasterEntry", "MasterCfError", "parse_master_cf", "parse_master_text",
           "split_args", "SERVICE_TYPES", "FIELD_NAMES", "split_entry",
           "normalize_daemon_args", "check_entry", "parse_entry"]

# master(5): the transport types master knows.
SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")
_BLANKS = " \t\r\n"


# postconf(1) -F: the names of the eight columns (the last one, "command",
# is the command and all its arguments).
FIELD_NAMES = ("service", "type", "private", "unprivileged", "chroot", "wakeup",
               "process_limit", "command")
MIN_FIELDS = 8              # postconf.h PCF_MASTER_MIN_FIELDS
# postconf_master.c pcf_daemon_options_expecting_value: only -o takes a value.
_OPTIONS_WITH_VALUE = "o"


class MasterCfError(ConfigError):
    """A bad master.cf line; str() names the file and line."""


@dataclass
class MasterEntry:
    service: str
    type: str
    private: bool
    unpriv: bool
    chroot: bool
    wakeup: int                 # seconds, 0 = none
    maxproc: int | None         # None: "-", i.e. $default_process_limit
    command: str
    args: list[str]             # after the command, -o options removed
    overrides: dict[str, str]   # -o name=value, in order
    path: str
    line: int
    wakeup_conditional: bool = False    # the "?" suffix: only when used
    fields: list[str] = field(default_factory=list)  # the 7 columns as written
    argv: list[str] = field(default_factory=list)    # command + every arg, normalized

    @property
    def name(self) -> str:
        """"service/type", as postconf -M and -F name it."""
        return f"{self.service}/{self.type}"


def _brace_words(text: str) -> list[tuple[str, bool]]:
    """Blank-separated words where a "{ ... }" group is one word (Postfix's
    mystrtokq with "{}"), each with whether its braces were left open."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in _BLANKS:
            i += 1
            continue
        j, depth = i, 0
        while j < n and (depth > 0 or text[j] not in _BLANKS):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}" and depth > 0:
                depth -= 1
            j += 1
        out.append((text[i:j], depth > 0))
        i = j
    return out


def split_args(text: str, path: str = "master.cf", warn=None) -> list[str]:
    """Whitespace-separated words; a "{ ... }" word loses its braces and
    outer blanks (Postfix's mystrtokq + extpar)."""
    out: list[str] = []
    for word, unclosed in _brace_words(text):
        if word.startswith("{"):
            if unclosed or not word.endswith("}"):
                if warn:
                    warn(f'{path}: missing \'}}\' in "{word}"')
                word = word[1:].strip(_BLANKS)
            else:
                word = word[1:-1].strip(_BLANKS)
        out.append(word)
    return out


def _normalize_option(value: str) -> str:
    """'{ name = value }' (already unbraced) -> 'name=value', as postconf
    prints it."""
    name, eq, rest = value.partition("=")
    if not eq:
        return value
    return f"{name.strip(_BLANKS)}={rest.strip(_BLANKS)}"


def _bool(value: str, what: str, default: bool, ctx) -> bool:
    if value == "-":
        return default
    if value in ("y", "n"):
        return value == "y"
    raise MasterCfError(f'{ctx}: invalid {what} field "{value}"')


def parse_master_text(text: str, path: str, *, warn=None, strict: bool = True) -> list[MasterEntry]:
    """Parse master.cf text.  strict: every "-o" must be name=value (what
    master needs); postconf uses strict=False to show what is written."""
    warn = warn or (lambda msg: None)
    entries: list[MasterEntry] = []
    for line, first, _last in logical_lines(text, path, warn):
        ctx = f"{path}: line {first}"
        words = split_args(line, path, warn)
        if len(words) < 8:
            raise MasterCfError(f"{ctx}: bad field count")
        service, stype, private, unpriv, chroot, wakeup, maxproc = words[:7]
        if stype not in SERVICE_TYPES:
            raise MasterCfError(f'{ctx}: invalid type field "{stype}"')
        wake_cond = wakeup.endswith("?")
        wake_text = wakeup[:-1] if wake_cond else wakeup
        if wakeup == "-":
            wake = 0
        elif wake_text.isdigit():
            wake = int(wake_text)
        else:
            raise MasterCfError(f'{ctx}: invalid wakeup field "{wakeup}"')
        if maxproc == "-":
            limit = None
        elif maxproc.isdigit():
            limit = int(maxproc)
        else:
            raise MasterCfError(f'{ctx}: invalid process_limit field "{maxproc}"')
        argv = words[7:]
        args: list[str] = []
        overrides: dict[str, str] = {}
        k = 1
        in_options = True
        while k < len(argv):
            arg = argv[k]
            if in_options and arg == "-o" and k + 1 < len(argv):
                value = _normalize_option(argv[k + 1])
                argv[k + 1] = value
                name, eq, val = value.partition("=")
                if eq and name:
                    overrides[name] = val
                elif strict:
                    raise MasterCfError(f'{ctx}: "-o {value}": need "-o name=value"')
                k += 2
                continue
            if in_options and (not arg.startswith("-") or arg == "--"):
                in_options = False
            args.append(arg)
            k += 1
        if strict and in_options and argv[-1] == "-o":
            raise MasterCfError(f'{ctx}: "-o" without name=value')
        entries.append(MasterEntry(
            service=service, type=stype,
            private=_bool(private, "private", True, ctx),
            unpriv=_bool(unpriv, "unprivileged", True, ctx),
            chroot=_bool(chroot, "chroot", False, ctx),
            wakeup=wake, maxproc=limit, command=argv[0], args=args,
            overrides=overrides, path=path, line=first,
            wakeup_conditional=wake_cond, fields=words[:7], argv=argv))
    return entries


def parse_master_cf(path: str, *, warn=None, strict: bool = True) -> list[MasterEntry]:
    """Parse the master.cf file at path; MasterCfError names file and line."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as err:
        raise MasterCfError(f"open {path}: {err.strerror}") from None
    return parse_master_text(text, path, warn=warn, strict=strict)


# -- Postfix's raw view of an entry, for postconf's master.cf editing --------
#
# postconf edits master.cf as words, not as the resolved MasterEntry above:
# it must print "-" columns as written and keep the order of every argument.
# These follow postconf_master.c (pcf_parse_master_entry and helpers) so that
# `postconf -Me/-Fe/-Pe` writes byte for byte what Postfix's writes.

def split_entry(text: str) -> list[str]:
    """argv_splitq(text, blanks, "{}"): blank-separated words where a
    "{ ... }" group (braces kept) is one word."""
    return [word for word, _ in _brace_words(text)]


def _extpar(word: str, warn) -> str:
    """extpar(EXTPAR_FLAG_STRIP): the text inside "{ ... }", blanks trimmed."""
    if not word.endswith("}") or len(word) < 2:
        # msg_warn() shows a non-printable character (the newline that
        # ends a physical line) as "?".
        shown = "".join(c if c.isprintable() else "?" for c in word)
        warn(f'master.cf: missing \'}}\' in "{shown}"')
        return word[1:].strip(_BLANKS)
    return word[1:-1].strip(_BLANKS)


def normalize_daemon_args(argv: list[str], warn=None) -> list[str]:
    """pcf_normalize_daemon_args(): "-vo x=y" -> "-v" "-o" "x=y",
    "-ox=y" -> "-o" "x=y", "-o { x = y }" -> "-o" "x=y", and "{ a b }"
    non-option arguments lose their braces."""
    warn = warn or (lambda msg: None)
    argv = list(argv)
    k = MIN_FIELDS
    while k < len(argv):
        arg = argv[k]
        if not arg.startswith("-") or arg == "--":
            break
        for pos in range(2, len(arg)):
            if arg[pos] in _OPTIONS_WITH_VALUE:
                argv[k:k + 1] = [arg[:pos], "-" + arg[pos:]]
                arg = argv[k]
                break
        if arg[1:2] not in _OPTIONS_WITH_VALUE or len(arg) < 2:
            k += 1
            continue
        if len(arg) > 2:
            argv[k:k + 1] = [arg[:2], arg[2:]]
            k += 1
        elif k + 1 < len(argv):
            k += 1
        else:
            k += 1
            continue
        if argv[k].startswith("{"):
            value = _extpar(argv[k], warn)
            if argv[k - 1][1] == "o":
                name, eq, rest = value.partition("=")
                if eq and name.strip(_BLANKS):
                    value = f"{name.strip(_BLANKS)}={rest.strip(_BLANKS)}"
                else:
                    warn(f"master.cf: missing '=' after attribute name: \"{value}\"")
            argv[k] = value
        k += 1
    for j in range(k, len(argv)):
        if argv[j].startswith("{"):
            argv[j] = _extpar(argv[j], warn)
    return argv


def check_entry(argv: list[str], raw_text: str) -> str | None:
    """pcf_check_master_entry(): the first error as Postfix words it
    (newlines in raw_text become spaces), or None."""
    raw = raw_text.replace("\n", " ")
    if argv[1] not in ("unix", "fifo", "inet", "pass"):
        return f'invalid type field "{argv[1]}" in "{raw}"'
    for k in (2, 3, 4):
        if len(argv[k]) != 1 or argv[k] not in "yn-":
            return f'invalid {FIELD_NAMES[k]} field "{argv[k]}" in "{raw}"'
    wake = argv[5]
    digits = wake[:-1] if wake.endswith("?") else wake
    if digits != "-" and digits.strip("0123456789"):
        return f'invalid wakeup field "{wake}" in "{raw}"'
    maxproc = argv[6]
    if maxproc != "-" and maxproc.strip("0123456789"):
        return f'invalid process_limit field "{maxproc}" in "{raw}"'
    return None


def parse_entry(text: str, warn=None) -> list[str]:
    """One whole entry (continuation lines included) as Postfix's postconf
    holds it.  Raises MasterCfError with Postfix's text ("bad field count",
    'invalid type field "x" in "..."'); the caller adds file and line."""
    argv = split_entry(text)
    if len(argv) < MIN_FIELDS:
        raise MasterCfError("bad field count")
    err = check_entry(argv, text)
    if err:
        raise MasterCfError(err)
    return normalize_daemon_args(argv, warn)
