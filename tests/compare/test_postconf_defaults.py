"""Every declared parameter that Postfix also has gets Postfix's default,
except those DIFFERS_FROM_POSTFIX explains (whose Postfix value it records)."""

import subprocess

from tests.conftest import postfix_bin
from pfy.config.params import DIFFERS_FROM_POSTFIX, DYNAMIC, PARAMS

# Computed from this host or install, for both; compared where they must agree.
HOST_DEPENDENT = {"myhostname", "mydomain", "mynetworks"}


def postfix_defaults(tmp_path):
    (tmp_path / "main.cf").write_text("")
    out = subprocess.run([postfix_bin("postconf"), "-c", str(tmp_path), "-d"],
                         capture_output=True, text=True, check=True).stdout
    return dict((line.split(" =", 1)[0], line.split(" =", 1)[1][1:]) for line in out.splitlines())


def test_defaults_match_postfix(tmp_path):
    theirs = postfix_defaults(tmp_path)
    from pfy.config import Config
    cfg = Config({}, {}, str(tmp_path))
    bad = []
    for name, p in PARAMS.items():
        if name not in theirs:
            continue
        if name in DIFFERS_FROM_POSTFIX:
            if theirs[name] != DIFFERS_FROM_POSTFIX[name][0]:
                bad.append(f"{name}: DIFFERS_FROM_POSTFIX records {DIFFERS_FROM_POSTFIX[name][0]!r}, Postfix has {theirs[name]!r}")
            continue
        if name in DYNAMIC and name not in HOST_DEPENDENT:
            continue
        ours = cfg.raw_or_default(name)
        if ours != theirs[name]:
            bad.append(f"{name}: got {ours!r} want {theirs[name]!r}")
    assert not bad, "\n".join(bad)
