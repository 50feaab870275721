"""Every parameter the code reads is declared in pfy/config/params.py."""

import re
from pathlib import Path

from pfy.config import param_info
from pfy.config.params import DIFFERS_FROM_POSTFIX, DYNAMIC, PARAMS, STR, TIME

ROOT = Path(__file__).parents[2] / "pfy"
# cfg.NAME, config.NAME, self.cfg.NAME, cfg["NAME"], transport_param(x, "suffix")
PATTERNS = [re.compile(r"(?<![.\w])(?:cfg|config|conf)\.([a-z][a-z0-9_]*)\b(?!\s*\()"),
            re.compile(r"(?<![.\w])(?:cfg|config|conf)\[\s*[\"']([a-z][a-z0-9_]*)[\"']\s*\]")]
# Config's own methods and properties, not parameters.
METHODS = {"raw", "expand", "transport_param", "with_overrides", "settings", "raw_or_default",
           "config_directory_path", "get", "cf"}
# pfy.config's own modules ("from pfy.config import master_cf").
METHODS |= {p.stem for p in (ROOT / "config").glob("*.py")}


def test_code_reads_only_declared_parameters():
    bad = []
    for path in ROOT.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for pat in PATTERNS:
                for name in pat.findall(line):
                    if name not in METHODS and param_info(name) is None:
                        bad.append(f"{path.relative_to(ROOT.parent)}:{number}: {name}")
    assert not bad, "undeclared parameters read:\n" + "\n".join(bad)


def test_registry_is_consistent():
    for name, p in PARAMS.items():
        assert p.doc, name
        if p.type == TIME:
            assert p.unit in ("s", "m", "h", "d", "w"), name
    for name in list(DIFFERS_FROM_POSTFIX) + list(DYNAMIC):
        assert name in PARAMS, name
    assert PARAMS["smtpd_forbid_bare_newline"].type == STR
