"""A Postfix administrator's master.cf: Debian's stock one
(/usr/share/postfix/master.cf.dist, from the postfix package the tests
install) passes `postfix check`, and each line naming a Postfix daemon pfy
does without is named with what pfy does instead -- never a bare
"command not found"."""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from instance import Instance  # noqa: E402

DEBIAN_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")


def test_debian_master_cf_checks_clean(tmp_path):
    if not DEBIAN_MASTER_CF.exists():
        pytest.skip("Debian's postfix package is not installed (tools/test installs it)")
    inst = Instance(tmp_path / "inst")
    # As shipped, but the SMTP server on a free loopback port: the check
    # must never bind port 25 on this machine.
    text = re.sub(r"(?m)^smtp(\s+)inet", f"127.0.0.1:{inst.smtp_port} inet",
                  DEBIAN_MASTER_CF.read_text())
    (inst.config_dir / "master.cf").write_text(text)
    p = inst.postfix("check")
    out = p.stderr
    assert "command not found" not in out, out
    for daemon in ("tlsmgr", "scache", "flush", "proxymap"):
        assert f"pfy has no {daemon}: " in out, out
    # verify(8) ships: its line is a working service, not a warning.
    assert "pfy has no verify" not in out, out
