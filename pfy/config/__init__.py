"""pfy configuration: main.cf with Postfix's semantics, typed by the registry.

    cfg = load_config()              # $MAIL_CONFIG or /etc/pfy, or a -c DIR
    cfg.myhostname, cfg["mynetworks"], cfg.transport_param("relay", "destination_concurrency_limit")

Values are expanded ($name, ${name?x}, ...) and converted to the type that
pfy/config/params.py declares; reading a name that is not declared raises
UndeclaredParameter.  See docs/INTERNALS.md, section pfy.config.
"""

import os

from pfy.config import params as _params
from pfy.config._expand import ExpandError, expand as _expand, split_list
from pfy.config._maincf import MainCfError, parse_main_cf

__all__ = ["Config", "ConfigError", "UndeclaredParameter", "load_config",
           "config_directory", "DEFAULT_CONFIG_DIRECTORY", "split_list",
           "param_info", "time_value", "feedback_value", "shipped_master_cf",
           "shipped_main_cf"]

DEFAULT_CONFIG_DIRECTORY = "/etc/pfy"


class ConfigError(Exception):
    """Bad configuration: str() is one line naming the file and line, or the
    parameter."""


class UndeclaredParameter(KeyError):
    """A parameter that pfy/config/params.py does not declare."""

    def __str__(self) -> str:
        return f"undeclared parameter: {self.args[0]}"


def config_directory(option: str | None = None) -> str:
    """The -c/-C option if given, else $MAIL_CONFIG, else /etc/pfy."""
    return option or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY


def param_info(name: str) -> "_params.Param | None":
    """The declaration of name: a registry entry, or a per-service parameter
    "<service>_<suffix>" (see params.SERVICE_PARAM_SUFFIXES); None if
    neither."""
    p = _params.PARAMS.get(name)
    if p is not None:
        return p
    return _service_param(name)


_SUFFIXES: dict[str, str] | None = None


def _service_param(name: str) -> "_params.Param | None":
    global _SUFFIXES
    if _SUFFIXES is None:
        _SUFFIXES = {}
        for table in _params.SERVICE_PARAM_SUFFIXES.values():
            _SUFFIXES.update(table)
    for suffix, default in _SUFFIXES.items():
        if name.endswith("_" + suffix) and len(name) > len(suffix) + 1:
            base = _params.PARAMS[default[1:]]
            return _params.Param(name, base.type, default,
                                 f"The {name[:-len(suffix) - 1]}-specific version of {default[1:]}.",
                                 base.unit)
    return None


def feedback_value(text: str) -> tuple[float, bool] | None:
    """qmgr_feedback.c syntax: "N", "N/M" or "N/concurrency" ->
    (amount, per_concurrency), or None when malformed or outside 0..1
    (where Postfix warns and uses 1, pfy refuses the configuration)."""
    num, slash, den = text.strip().partition("/")
    try:
        amount = float(num.strip())
        if slash:
            den = den.strip()
            if den == "concurrency":
                return (amount, True) if 0 <= amount <= 1 else None
            divisor = float(den)
            if not 1 / 2147483647 <= divisor <= 2147483647 or amount < 0:
                return None
            amount /= divisor
    except ValueError:
        return None
    if amount != amount or not 0 <= amount <= 1:      # NaN too
        return None
    return amount, False


# conv_time.c: the units a time value may carry.
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def time_value(text: str, unit: str | None = "s") -> int | None:
    """Seconds in a Postfix time value ("10", "5m", "1d"), or None if bad."""
    text = text.strip()
    if not text:
        return None
    mult = _TIME_UNITS.get(unit or "s", 1)
    if text[-1].lower() in _TIME_UNITS and len(text) > 1:
        mult = _TIME_UNITS[text[-1].lower()]
        text = text[:-1]
    if not text.isdigit():
        return None
    return int(text) * mult


class Config:
    """A main.cf plus master.cf -o overrides, typed by the registry.

    Attribute and item access give typed, expanded values (cached).
    """

    def __init__(self, settings: dict[str, str], where: dict[str, str],
                 config_dir: str) -> None:
        self._settings = settings      # name -> raw value as written
        self._where = where            # name -> "file, line N" for messages
        self._config_dir = config_dir
        self._cache: dict[str, object] = {}

    # -- raw values ---------------------------------------------------
    def raw(self, name: str) -> str | None:
        """The value as written in main.cf or -o (unexpanded), or None."""
        return self._settings.get(name)

    def settings(self) -> dict[str, str]:
        """Every name set in main.cf or -o, with its raw value."""
        return dict(self._settings)

    def raw_or_default(self, name: str) -> str | None:
        """The raw value, else the declared (or computed) default; None for
        a name that is neither set nor declared."""
        value = self._settings.get(name)
        if value is not None:
            return value
        p = param_info(name)
        if p is None:
            return None
        if name in _params.DYNAMIC:
            from pfy.config._dynamic import dynamic_default
            return dynamic_default(name, self._dyn_lookup)
        return p.default

    def _dyn_lookup(self, name: str, set_only: bool = False) -> str | None:
        if set_only:
            raw = self._settings.get(name)
            return None if raw is None else self.expand(raw)
        return self.expand(f"${{{name}}}")

    def expand(self, text: str) -> str:
        """$name expansion against this configuration (undefined names
        expand to nothing)."""
        try:
            return _expand(text, self.raw_or_default)
        except ExpandError as err:
            raise ConfigError(f"{self._config_dir}/main.cf: {err}") from None

    # -- typed values -------------------------------------------------
    def __getitem__(self, name: str):
        try:
            return self._cache[name]
        except KeyError:
            pass
        p = param_info(name)
        if p is None:
            raise UndeclaredParameter(name)
        raw = self.raw_or_default(name)
        try:
            text = _expand(raw or "", self.raw_or_default)
        except ExpandError as err:
            raise ConfigError(f"{self._where_is(name)}: parameter {name}: {err}") from None
        value = self._convert(p, text)
        self._cache[name] = value
        return value

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except UndeclaredParameter:
            raise AttributeError(f"undeclared parameter: {name}") from None

    def __contains__(self, name: str) -> bool:
        return param_info(name) is not None

    def _where_is(self, name: str) -> str:
        return self._where.get(name, f"{self._config_dir}/main.cf")

    def _convert(self, p, text: str):
        t = p.type
        if t == _params.STR:
            if p.choices:
                word = text.strip().lower()
                if word not in p.choices:
                    raise ConfigError(f"{self._where_is(p.name)}: parameter {p.name}: "
                                      f"bad value \"{text}\" (want one of {', '.join(p.choices)})")
                return word
            return text
        if t == _params.FEEDBACK:
            if feedback_value(text) is None:
                raise ConfigError(f"{self._where_is(p.name)}: parameter {p.name}: bad feedback "
                                  f"value \"{text}\" (want a number from 0 to 1, N/M or N/concurrency)")
            return text.strip()
        if t == _params.BOOL:
            low = text.strip().lower()
            if low in ("yes", "no"):
                return low == "yes"
            raise ConfigError(f"{self._where_is(p.name)}: bad boolean configuration: {p.name} = {text}")
        if t in (_params.INT, _params.SIZE):
            s = text.strip()
            try:
                return int(s, 10)
            except ValueError:
                raise ConfigError(f"{self._where_is(p.name)}: bad numerical configuration: {p.name} = {text}") from None
        if t == _params.TIME:
            seconds = time_value(text, p.unit)
            if seconds is None:
                raise ConfigError(f"{self._where_is(p.name)}: parameter {p.name}: bad time value or unit: {text}")
            return seconds
        items = split_list(text)
        if t == _params.MAPS:
            for item in items:
                if ":" not in item:
                    raise ConfigError(f'{self._where_is(p.name)}: parameter {p.name}: need "type:name" instead of "{item}"')
        return items

    # -- per-transport parameters --------------------------------------
    def transport_param(self, transport: str, suffix: str):
        """$<transport>_<suffix> if declared or set, else its default
        (default_<suffix>, as Postfix's per-transport parameters)."""
        name = f"{transport}_{suffix}"
        if name in _params.PARAMS or name in self._settings:
            return self[name]
        p = _service_param(name)
        if p is None:
            raise UndeclaredParameter(name)
        return self[p.default[1:]]

    def with_overrides(self, overrides: dict[str, str], where: str | None = None) -> "Config":
        """A copy with master.cf "-o name=value" settings applied."""
        settings = dict(self._settings)
        settings.update(overrides)
        located = dict(self._where)
        for name in overrides:
            located[name] = where or f"{self._config_dir}/master.cf: -o {name}"
        return Config(settings, located, self._config_dir)

    @property
    def config_directory_path(self) -> str:
        return self._config_dir

    def __repr__(self) -> str:
        return f"<Config {self._config_dir}>"


def load_config(config_dir: str | None = None, overrides: dict[str, str] | None = None,
                warn=None) -> Config:
    """Read config_dir/main.cf (missing = all defaults).  warn(msg) gets
    Postfix's warnings (default: ignored); errors raise ConfigError."""
    config_dir = config_directory(config_dir)
    path = os.path.join(config_dir, "main.cf")
    warn = warn or (lambda msg: None)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except OSError as err:
        raise ConfigError(f"open {path}: {err.strerror}") from None
    try:
        entries = parse_main_cf(text, path, warn)
    except MainCfError as err:
        raise ConfigError(str(err)) from None
    settings: dict[str, str] = {}
    where: dict[str, str] = {}
    for e in entries:
        if e.name in settings:
            warn(f"{path}, line {e.line}: overriding earlier entry: {e.name}={settings[e.name]}")
        settings[e.name] = e.value
        where[e.name] = f"{path}, line {e.line}"
    # Postfix sets config_directory to the directory it read (postconf -n
    # shows it), so $config_directory always names this instance.
    if config_dir != DEFAULT_CONFIG_DIRECTORY:
        settings.setdefault("config_directory", config_dir)
    cfg = Config(settings, where, config_dir)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    return cfg


# The shipped default files live in the package (pfy/data/), so they are
# there after a non-editable `pip install .` too; the top-level main.cf
# and master.cf of a checkout are symlinks to them.
_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def shipped_master_cf() -> str:
    """Path of the master.cf pfy ships (what `postfix` uses when a config
    folder has only a main.cf)."""
    return os.path.join(_DATA, "master.cf")


def shipped_main_cf() -> str:
    """Path of the commented main.cf pfy ships."""
    return os.path.join(_DATA, "main.cf")
