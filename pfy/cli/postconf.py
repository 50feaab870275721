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


def show_main(state: _State, names: list[str], mode: set[str]) -> int:
    from pfy.config import ConfigError
    known = _known(state)
    user = state.user_params(known, report="d" not in mode)
    if "d" in mode:
        pool = {name: _default_of(state, name, known, True) for name in known}
    else:
        pool = {}
        for name in list(known) + sorted(user):
            if name in state.settings:
                pool[name] = state.settings[name]
            elif "n" not in mode and name in known:
                pool[name] = _default_of(state, name, known, False)
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
_FIELD_NAMES = ("service", "type", "private", "unprivileged", "chroot", "wakeup",
                "process_limit", "command")


def format_master_entry(entry, fold: bool) -> str:
    """One master.cf entry as postconf -M prints it."""
    parts: list[str] = []
    line_len = 0
    for i, word in enumerate(entry.fields + [entry.argv[0]]):
        if line_len > 0:
            while True:
                parts.append(" ")
                line_len += 1
                if line_len >= _COLUMNS[i]:
                    break
        parts.append(word)
        line_len += len(word)
    argv = entry.argv
    in_options = True
    k = 1
    while k < len(argv):
        arg = argv[k]
        aval = None
        need_braces = False
        arg_len = len(arg)
        if in_options:
            if not arg.startswith("-") or arg == "--":
                in_options = False
                need_braces = any(c in arg for c in _SEPARATORS)
            elif arg[1:2] == "o" and k + 1 < len(argv):
                aval = argv[k + 1]
                if fold:
                    line_len = LINE_LIMIT
                arg_len += len(aval) + 3
                need_braces = any(c in aval for c in _SEPARATORS)
                if need_braces:
                    arg_len += 4
        else:
            need_braces = any(c in arg for c in _SEPARATORS)
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
            line_len += 1 + len(text)
            k += 1
            if fold:
                line_len = LINE_LIMIT
        k += 1
    return "".join(parts) + "\n"


def _command_text(entry) -> str:
    """The command field as -F shows it: what -M prints after the 7 fields."""
    line = format_master_entry(entry, False)
    pos = 0
    for word in entry.fields:
        pos = line.index(word, pos) + len(word)
    return line[pos:].strip()


def _select(entries, patterns: list[str], depth: int):
    """(entry, rest) for entries matching "service[/type[/rest]]" patterns."""
    if not patterns:
        return [(e, None) for e in entries]
    out = []
    for pat in patterns:
        parts = pat.split("/", 2)
        svc = parts[0]
        typ = parts[1] if len(parts) > 1 else ""
        rest = parts[2] if len(parts) > 2 else None
        for e in entries:
            if (not svc or e.service == svc) and (not typ or e.type == typ):
                out.append((e, rest))
    return out


def show_master(state: _State, patterns: list[str], mode: set[str]) -> int:
    seen = set()
    for e, _ in _select(state.master, patterns, 2):
        if id(e) in seen:
            continue
        seen.add(id(e))
        sys.stdout.write(format_master_entry(e, "f" in mode))
    return 0


def show_fields(state: _State, patterns: list[str], mode: set[str]) -> int:
    for e, rest in _select(state.master, patterns, 3):
        values = list(e.fields) + [_command_text(e)]
        for fname, value in zip(_FIELD_NAMES, values):
            if rest and rest != fname:
                continue
            _print_param(f"{e.service}/{e.type}/{fname}", value, mode)
    return 0


def show_params(state: _State, patterns: list[str], mode: set[str]) -> int:
    for e, rest in _select(state.master, patterns, 3):
        for name in sorted(e.overrides):
            if rest and rest != name:
                continue
            value = e.overrides[name]
            if "x" in mode:
                value = _expand_for_show(state, value, mode, {"service_name": e.service})
            _print_param(f"{e.service}/{e.type}/{name}", value, mode)
    return 0


def show_table_types() -> int:
    from pfy.tables import TABLE_TYPES
    for name in sorted(TABLE_TYPES):
        sys.stdout.write(name + "\n")
    return 0


# -- main ----------------------------------------------------------------

USAGE = ("usage: postconf [-aAbfFhHlmMnPtTvxX#] [-c config_dir] "
         "[-e | -X | -#] [-o name=value] [name...]")


def _run(argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, "aAbc:C:deEfFhHlmMno:pPtTvxX#")
    except getopt.GetoptError as err:
        fatal(f"{err}; {USAGE}")
    mode: set[str] = set()
    config_opt = None
    overrides: dict[str, str] = {}
    for opt, val in opts:
        if opt == "-c":
            config_opt = val
        elif opt == "-o":
            name, eq, value = val.partition("=")
            if not eq:
                fatal(f"missing '=' after attribute name: \"{val}\"")
            overrides[name.strip()] = value.strip()
        elif opt in ("-v", "-C"):
            pass
        else:
            mode.add(opt[1])
    if "d" in mode and "n" in mode:
        fatal("specify one of -d -n")
    unsupported = mode & set("aAblpEtT")
    if unsupported:
        fatal(f"-{''.join(sorted(unsupported))}: not supported by pfy")
    if "m" in mode:
        return show_table_types()
    explicit = config_opt is not None or bool(os.environ.get("MAIL_CONFIG"))
    from pfy.config import config_directory
    config_dir = config_directory(config_opt)
    edit = mode & set("eX#")
    if len(edit) > 1:
        fatal("specify one of -e, -X, -#")
    master_mode = mode & set("MFP")
    if len(master_mode) > 1:
        fatal("specify one of -M, -F, -P")
    state = _State(config_dir, explicit, overrides, need_master=True)
    if master_mode:
        state.user_params(_known(state))
        if edit:
            fatal(f"-{master_mode.pop()}{edit.pop()}: editing master.cf is not supported yet")
        which = master_mode.pop()
        return {"M": show_master, "F": show_fields, "P": show_params}[which](state, args, mode)
    if edit:
        if not args:
            fatal(f"-{edit.pop()} requires one or more parameter names")
        return edit_main(state, args, edit.pop())
    return show_main(state, args, mode)


def main(argv: list[str] | None = None) -> None:
    run_main(_run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
