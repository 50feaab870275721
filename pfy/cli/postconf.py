"""postconf - show and edit main.cf and master.cf, as Postfix's postconf(1).

    postconf [-dfhHnx] [-c DIR] [NAME ...]
    postconf -e | -X | -# [-c DIR] NAME=VALUE | NAME ...
    postconf -M [-e | -X | -#] [-f] [service[/type] ...]
    postconf -F [service[/type[/field]] ...]     postconf -P [service[/type[/name]] ...]
    postconf -m

Output matches Postfix's for the same input: values printed as words joined
by single spaces (-f folds lines longer than 80 columns), parameters sorted
by name, unknown parameters in main.cf reported as "unused parameter".
Imports are kept lean: postconf runs in scripts and must answer in <150 ms.
"""

import getopt
import os
import sys

from pfy.cli._common import fatal, run_main, warning

__all__ = ["main"]

# postconf.c PCF_LINE_LIMIT / PCF_INDENT_TEXT: -f folds at 80 columns and
# indents continuation lines by 4 spaces.
LINE_LIMIT = 80
INDENT = "    "
_SEPARATORS = " \t\r\n"


def fold_line(text: str, fold: bool) -> str:
    """pcf_print_line(): words joined by one space; with fold, wrap before a
    word that would reach column 80."""
    out: list[str] = []
    line_len = 0
    for word in text.split():
        if line_len > 0:
            if not fold or line_len + len(word) < LINE_LIMIT:
                out.append(" ")
                line_len += 1
            else:
                out.append("\n" + INDENT)
                line_len = len(INDENT)
        out.append(word)
        line_len += len(word)
    return "".join(out) + "\n"


class _State:
    """Everything one postconf run knows: main.cf, master.cf, the names."""

    def __init__(self, config_dir: str, explicit_dir: bool, overrides: dict[str, str],
                 need_master: bool) -> None:
        from pfy.config import load_config
        self.config_dir = config_dir
        self.main_path = os.path.join(config_dir, "main.cf")
        self.master_path = os.path.join(config_dir, "master.cf")
        self.cfg = load_config(config_dir, warn=warning)
        if overrides:
            self.cfg = self.cfg.with_overrides(overrides)
        self.settings = self.cfg.settings()
        if not explicit_dir:
            self.settings.pop("config_directory", None)
        self.master = self._load_master() if need_master else []

    def _load_master(self):
        from pfy.config.master_cf import parse_master_text
        try:
            with open(self.master_path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as err:
            warning(f"open {self.master_path}: {err.strerror}")
            return []
        return parse_master_text(text, self.master_path, warn=warning, strict=False)

    def service_params(self) -> dict[str, str]:
        """Per-service parameters for master.cf's delivery services (name -> default)."""
        from pfy.config.params import PARAMS, SERVICE_PARAM_SUFFIXES
        out: dict[str, str] = {}
        for e in self.master:
            table = SERVICE_PARAM_SUFFIXES.get(e.command)
            if table is None or e.type != "unix":
                continue
            for suffix, default in table.items():
                name = f"{e.service}_{suffix}"
                if name not in PARAMS:
                    out[name] = default
        return out

    def user_params(self, known, report: bool = True) -> set[str]:
        """main.cf names that are "used" though not built in: referenced as
        $name by a value, or named in smtpd_restriction_classes (as
        Postfix's pcf_register_user_parameters)."""
        from pfy.config import split_list
        used: set[str] = set()
        values = list(self.settings.values())
        for e in self.master:
            values.extend(e.overrides.values())
        undefined: list[str] = []
        for v in values:
            for name in _references(v):
                if name in self.settings and name not in known:
                    used.add(name)
                elif name not in self.settings and name not in known and name not in undefined:
                    undefined.append(name)
        # Postfix's scan of values for user-defined names reports these.
        for name in undefined if report else ():
            warning(f"{self.main_path}: undefined parameter: {name}")
        for name in split_list(self.settings.get("smtpd_restriction_classes", "")):
            if name in self.settings and name not in known:
                used.add(name)
        # A used parameter's own references count too.
        todo = list(used)
        while todo:
            for ref in _references(self.settings[todo.pop()]):
                if ref in self.settings and ref not in known and ref not in used:
                    used.add(ref)
                    todo.append(ref)
        return used


def _references(value: str) -> list[str]:
    """Names that $name / ${name...} / $(name) in value refer to."""
    names: list[str] = []
    i, n = 0, len(value)
    while True:
        i = value.find("$", i)
        if i < 0 or i + 1 >= n:
            return names
        c = value[i + 1]
        if c == "$":
            i += 2
            continue
        j = i + 2 if c in "{(" else i + 1
        k = j
        while k < n and (value[k].isalnum() or value[k] == "_"):
            k += 1
        if k > j:
            names.append(value[j:k])
        i = k if k > i + 1 else i + 1


def _known(state: _State) -> dict[str, str]:
    """name -> default for every parameter this run knows."""
    from pfy.config.params import PARAMS
    known = {name: p.default for name, p in PARAMS.items()}
    known.update(state.service_params())
    return known


def _default_of(state: _State, name: str, known: dict[str, str], pure: bool) -> str:
    from pfy.config.params import DYNAMIC
    if name in DYNAMIC:
        # -d shows these computed from defaults alone; otherwise from main.cf
        # (mynetworks follows mynetworks_style, myhostname $mydomain).
        from pfy.config import Config
        cfg = Config({}, {}, state.config_dir) if pure else state.cfg
        return cfg.raw_or_default(name) or ""
    return known.get(name, "")


def _print_param(name: str, value: str, mode: set[str]) -> None:
    if "H" in mode:
        sys.stdout.write(name + "\n")
    elif "h" in mode:
        sys.stdout.write(fold_line(value, "f" in mode) if value.strip() else "\n")
    else:
        sys.stdout.write(fold_line(f"{name} = {value}", "f" in mode) if value.strip()
                         else f"{name} =\n")


def show_main(state: _State, names: list[str], mode: set[str],
              param_class: set[str] | None = None) -> int:
    from pfy.config import ConfigError
    from pfy.config.params import PARAMS
    known = _known(state)
    user = state.user_params(known, report="d" not in mode)
    # Only the names asked for are computed: some defaults are costly
    # (mynetworks reads the interfaces) and "postconf NAME" must be quick.
    candidates = list(known) + sorted(user)
    if names:
        wanted = set(names)
        candidates = [n for n in candidates if n in wanted]
    if "d" in mode:
        pool = {name: _default_of(state, name, known, True) for name in candidates if name in known}
    else:
        pool = {}
        for name in candidates:
            if name in state.settings:
                pool[name] = state.settings[name]
            elif "n" not in mode and name in known:
                pool[name] = _default_of(state, name, known, False)
    if param_class is not None:
        # -C: builtin (the registry), service (per master.cf service), user.
        def klass(name: str) -> str:
            return "builtin" if name in PARAMS else "service" if name in known else "user"
        pool = {n: v for n, v in pool.items() if klass(n) in param_class}
    if names:
        selected = []
        for name in names:
            if name in pool:
                selected.append(name)
            elif "n" not in mode:
                warning(f"{name}: unknown parameter")
    else:
        selected = sorted(pool)
    for name in selected:
        value = pool[name]
        if "x" in mode:
            try:
                value = _expand_for_show(state, value, mode)
            except ConfigError as err:
                warning(str(err))
                fatal("macro processing error")
        _print_param(name, value, mode)
    if "d" not in mode:
        _warn_unused(state, known, user)
    return 0


def _expand_for_show(state: _State, value: str, mode: set[str], extra=None) -> str:
    from pfy.config import ConfigError
    from pfy.config._expand import ExpandError, expand
    cfg = state.cfg.with_overrides(extra) if extra else state.cfg
    if "d" in mode:
        from pfy.config import Config
        cfg = Config({}, {}, state.config_dir)
    warned: set[str] = set()

    def undefined(name: str) -> None:
        if name not in warned:
            warned.add(name)
            warning(f"{state.main_path}: undefined parameter: {name}")
    try:
        return expand(value, cfg.raw_or_default, undefined=undefined)
    except ExpandError as err:
        raise ConfigError(str(err)) from None


def _warn_unused(state: _State, known, user) -> None:
    for name, value in state.settings.items():
        if name not in known and name not in user:
            warning(f"{state.main_path}: unused parameter: {name}={value}")
    for e in state.master:
        for name, value in e.overrides.items():
            if name not in known and name not in state.settings:
                warning(f"{state.master_path}: unused parameter: {name}={value}")


# -- editing main.cf ---------------------------------------------------

def edit_main(state: _State, args: list[str], action: str) -> int:
    """-e (replace/append), -X (remove), -# (comment out), as Postfix's
    pcf_edit_main(): physical lines copied as they are, the matching logical
    lines rewritten, new names appended; written through a temp file."""
    from pfy.config._maincf import MainCfError, split_nameval
    edits: dict[str, str | None] = {}
    for arg in args:
        if action == "e":
            try:
                name, value = split_nameval(arg)
            except MainCfError as err:
                fatal(str(err))
            edits[name] = value
        else:
            if "=" in arg:
                fatal(f'illegal parameter name: "{arg}"')
            edits[arg] = None
    try:
        with open(state.main_path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except OSError as err:
        fatal(f"open {state.main_path}: {err.strerror}")
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    seen: dict[str, int] = {}
    interesting: str | None = None
    for line in lines:
        body = line.rstrip("\n")
        stripped = body.lstrip(" \t\r\f\v")
        if not stripped or stripped.startswith("#"):
            out.append(line)
            continue
        if stripped is body or body[:1] not in " \t\r\f\v":
            name = stripped.split("=", 1)[0].strip(" \t")
            interesting = name if name in edits else None
            if interesting is None:
                out.append(line)
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] == 2:
                warning(f'{state.main_path}: multiple entries for "{name}"')
            if action == "e":
                value = edits[name]
                out.append(f"{name} = {value}\n")
            elif action == "#":
                out.append("#" + line)
            continue
        # A continuation line belongs to the current logical line.
        if interesting is None:
            out.append(line)
        elif action == "#":
            out.append("#" + line)
    if action == "e":
        # New names are appended in the order given (Postfix uses its hash
        # table's order, which nothing should depend on).
        for name, value in edits.items():
            if name not in seen:
                out.append(f"{name} = {value}\n")
    _replace_file(state.main_path, "".join(out))
    return 0


def _replace_file(path: str, text: str) -> None:
    """Write text to path atomically (temp file, fsync, rename), keeping
    the old file's mode."""
    tmp = f"{path}.tmp"
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        fatal(f"open {tmp}: {err.strerror}")


# -- master.cf ---------------------------------------------------------

# postconf.c pcf_print_master_entry(): preferred columns of the 8 fields.
_COLUMNS = (0, 11, 17, 25, 33, 41, 49, 57)
_MIN_FIELDS = 8
_CMD = 7                    # index of the command field


def _needs_braces(text: str) -> bool:
    return any(c in _SEPARATORS for c in text)


def _fold_arguments(argv: list[str], start: int, parts: list[str], line_len: int,
                    fold: bool, expand, o_extra: int) -> None:
    """The command's arguments from argv[start], appended to parts: "-o
    name=value" on a line of its own when folding, values with blanks in
    braces, expand(value) for -Mx/-Fx.  Postfix writes this loop twice
    (pcf_print_master_entry and pcf_print_master_field) and the two count
    a "-o" value's width differently (o_extra: 3 for -M, 1 for -F), which
    shows where a long line folds."""
    in_options = True
    k = start
    while k < len(argv):
        arg = argv[k]
        aval = None
        need_braces = False
        arg_len = len(arg)
        if in_options:
            if not arg.startswith("-") or arg == "--":
                in_options = False
            elif arg[1:2] == "o" and k + 1 < len(argv):
                aval = argv[k + 1]
                line_len = LINE_LIMIT      # force a break before "-o x=y"
                if arg == "-o" and expand is not None:
                    aval = expand(aval)
                arg_len += len(aval) + o_extra
                need_braces = _needs_braces(aval)
                if need_braces:
                    arg_len += 2
        if not in_options:
            need_braces = _needs_braces(arg)
        if line_len > len(INDENT):
            if not fold or line_len + 1 + arg_len < LINE_LIMIT:
                parts.append(" ")
                line_len += 1
            else:
                parts.append("\n" + INDENT)
                line_len = len(INDENT)
        text = "{" + arg + "}" if (not in_options and need_braces) else arg
        parts.append(text)
        line_len += len(text)
        if aval is not None:
            text = "{" + aval + "}" if need_braces else aval
            parts.append(" " + text)
            k += 1
            line_len = LINE_LIMIT          # and a break after it
        k += 1


def format_master_argv(argv: list[str], fold: bool, expand=None) -> str:
    """pcf_print_master_entry(): the 8 columns at their preferred
    positions, then the arguments; "-o name=value" each on its own line
    when folding; values with blanks in braces.  expand(value) for -Mx."""
    parts: list[str] = []
    line_len = 0
    for i in range(_MIN_FIELDS):
        if line_len > 0:
            while True:
                parts.append(" ")
                line_len += 1
                if line_len >= _COLUMNS[i]:
                    break
        parts.append(argv[i])
        line_len += len(argv[i])
    _fold_arguments(argv, _MIN_FIELDS, parts, line_len, fold, expand, o_extra=3)
    return "".join(parts) + "\n"


def format_master_entry(entry, fold: bool) -> str:
    """One parsed MasterEntry as postconf -M prints it."""
    return format_master_argv(list(entry.fields) + list(entry.argv), fold)


def format_master_field(argv: list[str], k: int, mode: set[str], expand=None) -> str:
    """pcf_print_master_field(): "service/type/field = value" for -F."""
    from pfy.config.master_cf import FIELD_NAMES
    out: list[str] = []
    line_len = 0
    if "h" not in mode:
        head = f"{argv[0]}/{argv[1]}/{FIELD_NAMES[k]}"
        if "H" in mode:
            return head + "\n"
        head += " = "
        out.append(head)
        line_len = len(head)
        if line_len + len(argv[k]) > LINE_LIMIT:
            out.append("\n" + INDENT)
            line_len = len(INDENT)
    out.append(argv[k])
    line_len += len(argv[k])
    if k == _CMD:
        _fold_arguments(argv, k + 1, out, line_len, "f" in mode, expand, o_extra=1)
    return "".join(out) + "\n"


def parse_service_pattern(text: str, least: int, most: int) -> list[str] | None:
    """pcf_parse_service_pattern(): "name[/type[/x]]" split on "/" (empty
    parts dropped, as argv_split does), padded with "*"; "*" matches any
    but only as a whole part.  None when malformed."""
    if text.startswith("/"):
        return None
    parts = [p for p in text.split("/") if p]
    if not least <= len(parts) <= most:
        return None
    if any("*" in p and p != "*" for p in parts):
        return None
    return parts + ["*"] * (most - len(parts))


def _match_service(pattern: list[str], name: str, stype: str) -> bool:
    return (pattern[0] in ("*", name)) and (pattern[1] in ("*", stype))


def _field_index(name: str) -> int:
    """pcf_parse_field_pattern(): a column name or "*" (returned as -1)."""
    from pfy.config.master_cf import FIELD_NAMES
    if name == "*":
        return -1
    if name not in FIELD_NAMES:
        fatal(f'invalid service attribute name: "{name}"')
    return FIELD_NAMES.index(name)


def _master_expander(state: "_State", mode: set[str], entry):
    if "x" not in mode:
        return None
    return lambda value: _expand_for_show(state, value, mode, {"service_name": entry.service})


def _requests(patterns: list[str], least: int, most: int, usage: str):
    reqs = []
    for raw in patterns:
        pat = parse_service_pattern(raw, least, most)
        if pat is None:
            fatal(usage)
        reqs.append([raw, pat, 0])
    return reqs


def _warn_unmatched(reqs) -> None:
    for req in reqs:
        if req[2] == 0:
            warning(f'unmatched request: "{req[0]}"')


def show_master(state: "_State", patterns: list[str], mode: set[str]) -> int:
    """-M: entries in file order; an entry matching two patterns is shown
    twice, as Postfix's pcf_show_master_entries() does."""
    reqs = _requests(patterns, 1, 2, "-M option requires service_name[/type]")
    for e in state.master:
        argv = list(e.fields) + list(e.argv)
        text = format_master_argv(argv, "f" in mode, _master_expander(state, mode, e))
        if not reqs:
            sys.stdout.write(text)
        for req in reqs:
            if _match_service(req[1], e.service, e.type):
                req[2] += 1
                sys.stdout.write(text)
    _warn_unmatched(reqs)
    return 0


def show_fields(state: "_State", patterns: list[str], mode: set[str]) -> int:
    reqs = _requests(patterns, 1, 3, "-F option requires service_name[/type[/field]]")
    for req in reqs:
        req.append(_field_index(req[1][2]))
    for e in state.master:
        argv = list(e.fields) + list(e.argv)
        expand = _master_expander(state, mode, e)
        wanted = [-1] if not reqs else []
        for req in reqs:
            if _match_service(req[1], e.service, e.type):
                req[2] += 1
                wanted.append(req[3])
        for k in wanted:
            for field in range(_MIN_FIELDS) if k < 0 else (k,):
                sys.stdout.write(format_master_field(argv, field, mode, expand))
    _warn_unmatched(reqs)
    return 0


def show_params(state: "_State", patterns: list[str], mode: set[str]) -> int:
    reqs = _requests(patterns, 1, 3, "-P option requires service_name[/type[/parameter]]")

    def show(e, name: str) -> None:
        value = e.overrides[name]
        if "x" in mode:
            value = _expand_for_show(state, value, mode, {"service_name": e.service})
        _print_param(f"{e.service}/{e.type}/{name}", value, mode)

    for e in state.master:
        if not e.overrides:
            continue        # Postfix: no parameter dictionary for this entry
        if not reqs:
            for name in sorted(e.overrides):
                show(e, name)
        for req in reqs:
            if not _match_service(req[1], e.service, e.type):
                continue
            if req[1][2] == "*":
                req[2] += 1
                for name in sorted(e.overrides):
                    show(e, name)
            elif req[1][2] in e.overrides:
                req[2] += 1
                show(e, req[1][2])
    _warn_unmatched(reqs)
    return 0


# -- editing master.cf ---------------------------------------------------

def _split_request(raw: str, edit: str, kind: str):
    """Parse one -Me/-Fe/-Pe/-MX/-M#/-PX argument as pcf_edit_master()
    does: (pattern parts, value, field index or parameter name)."""
    from pfy.config._maincf import MainCfError, split_nameval
    if "\n" in raw:
        fatal("-Me, -Fe, -Pe, -X, or -# accept no multi-line input")
    text = raw.lstrip(" \t\r\n\f\v")
    if text.startswith("#"):
        fatal("-Me, -Fe, -Pe, -X, or -# accept no comment input")
    if edit == "e":
        try:
            pattern, value = split_nameval(text)
        except MainCfError as err:
            # split_nameval's words, then the whole argument, as Postfix.
            fatal(f'{_nameval_error(str(err))}: "{raw}"')
    else:
        if "=" in text:
            fatal("-X or -# requires names without value")
        pattern, value = text.strip(" \t\r\n\f\v"), None
    extra = None
    if kind == "M":
        pat = parse_service_pattern(pattern, 2, 2)
        if pat is None:
            fatal("-Me, -MX or -M# requires service_name/type")
    elif kind == "F":
        pat = parse_service_pattern(pattern, 3, 3)
        if pat is None:
            fatal("-Fe or -FX requires service_name/type/field_name")
        extra = _field_index(pat[2])
        if extra < 0:
            fatal("-Fe does not accept wild-card field name")
        if edit == "e" and extra < _CMD and _needs_braces(value):
            fatal("-Fe does not accept whitespace in non-command field")
    else:
        pat = parse_service_pattern(pattern, 3, 3)
        if pat is None:
            fatal("-Pe or -PX requires service_name/type/parameter")
        extra = pat[2]
        if extra == "*":
            fatal("-Pe does not accept wild-card parameter name")
        if edit == "e" and _needs_braces(value):
            fatal("-Pe does not accept whitespace in parameter value")
    return pat, value, extra


def _nameval_error(msg: str) -> str:
    """split_nameval()'s own words, without our file/line decoration."""
    for words in ("missing '=' after attribute name", "missing attribute name",
                  "missing attribute value"):
        if words in msg:
            return words
    return msg


def _parse_or_die(text: str, where: str | None, raw: str | None):
    """pcf_parse_master_entry() with Postfix's fatal texts."""
    from pfy.config.master_cf import MasterCfError, parse_entry
    try:
        return parse_entry(text, warn=warning)
    except MasterCfError as err:
        msg = str(err)
        if msg == "bad field count":
            fatal(f"{where}: {msg}" if where else f'{msg}: "{raw}"')
        fatal(msg)      # pcf_check_master_entry(): the text names the entry


def _edit_param(argv: list[str], edit: str, name: str, value: str | None) -> None:
    """pcf_edit_master_param(): replace or remove every "-o name=...",
    or add "-o name=value" after the last option."""
    matched = False
    k = _MIN_FIELDS
    while k < len(argv):
        arg = argv[k]
        if not arg.startswith("-") or arg == "--":
            break
        if arg[1:2] == "o" and k + 1 < len(argv):
            if arg == "-o" and argv[k + 1].startswith(name + "="):
                matched = True
                if edit == "e":
                    argv[k + 1] = f"{name}={value}"
                else:
                    del argv[k:k + 2]
                    continue
            k += 1
        k += 1
    if edit == "e" and not matched:
        argv[k:k] = ["-o", f"{name}={value}"]


def _edit_field(argv: list[str], k: int, value: str) -> list[str]:
    """pcf_edit_master_field(): one column, or the whole command line."""
    from pfy.config.master_cf import check_entry, normalize_daemon_args, split_entry
    if k == _CMD:
        argv = normalize_daemon_args(argv[:_CMD] + split_entry(value), warning)
    else:
        argv[k] = value
    err = check_entry(argv, value)
    if err:
        fatal(err)
    return argv


def edit_master(state: "_State", args: list[str], edit: str, kind: str) -> int:
    """-Me/-MX/-M#, -Fe, -Pe/-PX: pcf_edit_master(), line for line.

    Comment and blank lines pass through; the matching entry is replaced by
    its new text (printed folded, as -Mf would), removed, or commented out
    line by line; -Me adds entries that matched nothing at the end."""
    reqs = []
    for raw in args:
        pat, value, extra = _split_request(raw, edit, kind)
        reqs.append({"raw": raw, "pat": pat, "value": value, "extra": extra, "count": 0})
    path = state.master_path
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            lines = f.read().splitlines(keepends=True)
    except OSError as err:
        fatal(f"open {path} for reading: {err.strerror}")
    out: list[str] = []
    lineno = 0
    i = 0
    matched = False

    def is_content(line: str) -> bool:
        body = line.lstrip(" \t\r\n\f\v")
        return bool(body) and not body.startswith("#")

    while i < len(lines):
        line = lines[i]
        i += 1
        lineno += 1
        # Postfix 3.7 copies a last line without newline as it is.
        if not is_content(line):
            out.append(line)
            continue
        if line[0] in " \t\r\f\v":          # continuation of the last entry
            if not matched:
                out.append(line)
            elif edit == "#":
                out.append("#" + line)
            continue
        matched = False
        words = line.split()
        if len(words) < 2:
            fatal(f"file {path}: line {lineno}: specify service name and type on the same line")
        name, stype = words[0], words[1]
        if "=" in name:
            fatal(f'file {path}: line {lineno}: service name syntax "{name}" is unsupported '
                  "with -Me, -Fe, -Pe, -X, or -#")
        if "=" in stype or "/" in stype:
            fatal(f'file {path}: line {lineno}: service type syntax "{stype}" is unsupported '
                  "with -Me, -Fe, -Pe, -X, or -#")
        new_entry = None
        for req in reqs:
            tentative = None
            use_tentative = False
            if kind == "M" and edit == "e":
                tentative = _parse_or_die(req["value"], None, req["raw"])
            if _match_service(req["pat"], name, stype):
                matched = True
                req["count"] += 1
                if edit == "e" or (kind == "P" and edit == "X"):
                    if kind in "FP":
                        if new_entry is None:
                            # Gobble the continuation lines (comments and
                            # blank lines inside pass through at once).
                            full = line
                            while i < len(lines) and lines[i][:1] in ("#", " ", "\t", "\r", "\n", "\f", "\v"):
                                nxt = lines[i]
                                i += 1
                                if is_content(nxt):
                                    full += nxt
                                else:
                                    out.append(nxt)
                            new_entry = _parse_or_die(full, f"file {path}: line {lineno}", None)
                        if kind == "F":
                            new_entry = _edit_field(new_entry, req["extra"], req["value"])
                        else:
                            _edit_param(new_entry, edit, req["extra"], req["value"])
                    elif req["count"] == 1:
                        use_tentative = True
            elif tentative is not None and _match_service(tentative[:2], name, stype):
                matched = True
                req["count"] += 1
                if req["count"] == 1:
                    use_tentative = True
            if use_tentative:
                new_entry = tentative
        if new_entry is not None:
            out.append(format_master_argv(new_entry, True))
        elif not matched:
            out.append(line)
        elif edit == "#":
            out.append("#" + line)
    for req in reqs:
        if req["count"] == 0:
            if kind == "M" and edit == "e":
                out.append(format_master_argv(_parse_or_die(req["value"], None, req["raw"]), True))
            elif kind != "M":
                warning(f'unmatched service_name/type: "{req["raw"]}"')
    _replace_file(path, "".join(out))
    return 0


# -- other listings --------------------------------------------------------

def show_table_types() -> int:
    from pfy.tables import TABLE_TYPES
    for name in sorted(TABLE_TYPES):
        sys.stdout.write(name + "\n")
    return 0


def show_locks() -> int:
    """-l: the mailbox lock methods pfy.mailbox.lock implements, in
    Postfix's order (mbox_lock_names: flock, fcntl, dotlock)."""
    sys.stdout.write("flock\nfcntl\ndotlock\n")
    return 0


def show_sasl(client: bool) -> int:
    """-a / -A: the smtpd_sasl_type / smtp_sasl_type values this pfy
    implements (pfy/sasl/server.py: Dovecot's auth protocol and pfy's own
    user table).  There is no client-side SASL yet, so -A lists nothing."""
    if not client:
        sys.stdout.write("dovecot\npfy\n")
    return 0


def show_tls(what: str) -> int:
    """-T: the TLS library that pfy uses (Python's ssl module)."""
    if what not in ("compile-version", "run-version", "public-key-algorithms"):
        warning(f"unknown 'postconf -T' mode: {what}")
        return 1
    import ssl
    if what == "run-version":
        sys.stdout.write(ssl.OPENSSL_VERSION + "\n")
    elif what == "compile-version":
        # Python records only the numbers of the headers it was built with.
        major, minor, fix = ssl._OPENSSL_API_VERSION[:3]
        sys.stdout.write(f"OpenSSL {major}.{minor}.{fix}\n")
    else:
        # The certificate kinds pfy.tls loads: *_dcert_file, *_eccert_file,
        # *_cert_file (Postfix 3.7 prints the same three).
        sys.stdout.write("dsa\necdsa\nrsa\n")
    return 0


# -- main ----------------------------------------------------------------

# postconf.c pcf_compat_names: the order in which options are named.
_OPTION_ORDER = "aAbCdefFhHlmMnopPtTxX#"
# pcf_incompat_options: at most one option of each group.
_EXCLUSIVE = ("aAblmtpMFPT", "den#X", "fe#X", "xe#X", "ode#X", "he#XH")
# pcf_compat_options: each major mode and the modifiers it allows.
_COMPATIBLE = {
    "a": "", "A": "", "b": "", "l": "", "m": "", "T": "", "t": "",
    "p": "eX#fhxdnoH",
    "M": "eX#fox",
    "F": "efhoxH",
    "P": "eXfhoxH",
}
_MAJOR_ORDER = "aAblmTtpMFP"


def _names(letters: set[str]) -> str:
    return " ".join("-" + c for c in _OPTION_ORDER if c in letters)


def _check_options(mode: set[str]) -> None:
    """pcf_check_exclusive_options() and pcf_check_compat_options()."""
    for group in _EXCLUSIVE:
        given = mode & set(group)
        if len(given) > 1:
            fatal(f"specify one of {_names(given)}")
    for major in _MAJOR_ORDER:
        if major in mode:
            excess = mode - set(major) - set(_COMPATIBLE[major])
            if excess:
                fatal(f"with option -{major}, do not specify {_names(excess)}")


USAGE_TEXT = ("[-a (server SASL types)] [-A (client SASL types)] [-b (bounce templates)] "
              "[-c config_dir] [-c param_class] [-d (parameter defaults)] [-e (edit configuration)] "
              "[-f (fold lines)] [-F (master.cf fields)] [-h (no names)] [-H (no values)] "
              "[-l (lock types)] [-m (map types)] [-M (master.cf)] [-n (non-default parameters)] "
              "[-o name=value (override parameter value)] [-p (main.cf, default)] "
              "[-P (master.cf parameters)] [-t (bounce templates)] "
              "[-T compile-version|run-version|public-key-algorithms] [-v (verbose)] "
              "[-x (expand parameter values)] [-X (exclude)] [-# (comment-out)] [name...]")


def _usage() -> None:
    from pfy.cli._common import program_name
    fatal(f"usage: {program_name()} {USAGE_TEXT}")


def _run(argv: list[str]) -> int:
    from pfy.cli._common import program_name
    try:
        opts, args = getopt.getopt(argv, "aAbc:C:deEfFhHlmMno:pPtT:vxX#")
    except getopt.GetoptError as err:
        # GNU getopt's complaint, then Postfix's usage line.
        if err.opt and "requires argument" in err.msg:
            sys.stderr.write(f"{program_name()}: option requires an argument -- '{err.opt}'\n")
        else:
            sys.stderr.write(f"{program_name()}: invalid option -- '{err.opt}'\n")
        _usage()
    mode: set[str] = set()
    config_opt = None
    overrides: dict[str, str] = {}
    param_class = None
    tls_mode = None
    for opt, val in opts:
        if opt == "-c":
            config_opt = val
        elif opt == "-C":
            param_class = _param_class(val)
        elif opt == "-o":
            name, eq, value = val.partition("=")
            if not eq:
                fatal(f"missing '=' after attribute name: \"{val}\"")
            overrides[name.strip()] = value.strip()
            mode.add("o")
        elif opt == "-T":
            if "T" in mode:
                fatal("At most one -T <mode> option may be specified")
            mode.add("T")
            tls_mode = val
        elif opt == "-v":
            pass
        elif opt == "-E":
            _usage()        # not an option of Postfix 3.7's postconf
        elif opt in ("-b", "-t"):
            if mode & {"b", "t"}:
                fatal("specify one of -b and -t")
            mode.add(opt[1])
        else:
            mode.add(opt[1])
    # Postfix: no major mode means -p; "name=value" as the first argument
    # means -e (so "postconf name=value" and "postconf -M x/y='...'" edit).
    if not mode & set(_EXCLUSIVE[0]):
        mode.add("p")
    if mode & set("pMFP") and args and "=" in args[0]:
        mode.add("e")
    _check_options(mode)
    if "e" in mode and not args:
        fatal("-e requires name=value argument")
    if mode & {"b", "t"}:
        fatal(f"-{''.join(mode & {'b', 't'})}: bounce templates are not supported by pfy "
              "(pfy has no bounce(8) templates yet)")
    if "m" in mode:
        return show_table_types()
    if "l" in mode:
        return show_locks()
    from pfy.config import config_directory
    explicit = config_opt is not None or bool(os.environ.get("MAIL_CONFIG"))
    config_dir = config_directory(config_opt)
    master_mode = (mode & set("MFP"))
    edit = mode & set("eX#")
    if master_mode and not edit:
        if not os.path.exists(os.path.join(config_dir, "master.cf")):
            fatal(f"open {os.path.join(config_dir, 'master.cf')}: No such file or directory")
        state = _State(config_dir, explicit, overrides, need_master=True)
        state.user_params(_known(state))
        which = master_mode.pop()
        status = {"M": show_master, "F": show_fields, "P": show_params}[which](state, args, mode)
        return status
    if "a" in mode or "A" in mode:
        return show_sasl("A" in mode)
    if "T" in mode:
        return show_tls(tls_mode)
    if edit:
        if not args:
            fatal("missing service argument")
        if master_mode:
            state = _State(config_dir, explicit, overrides, need_master=False)
            return edit_master(state, args, edit.pop(), master_mode.pop())
        state = _State(config_dir, explicit, overrides, need_master=False)
        return edit_main(state, args, edit.pop())
    state = _State(config_dir, explicit, overrides, need_master=True)
    return show_main(state, args, mode, param_class)


def _param_class(value: str) -> set[str]:
    """-C builtin,service,user,all (name_mask_opt, any case)."""
    classes: set[str] = set()
    for word in value.replace(",", " ").replace("|", " ").split():
        w = word.lower()
        if w == "all":
            classes |= {"builtin", "service", "user"}
        elif w in ("builtin", "service", "user"):
            classes.add(w)
        else:
            fatal(f'unknown -C option value "{word}" in "{value}"')
    return classes


def main(argv: list[str] | None = None) -> None:
    run_main(_run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
