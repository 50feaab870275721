"""Keep bench/bench_postconf.py working: run it with a tiny N."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import pfy_bin

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_postconf.py"


def test_bench_postconf_tiny():
    pfy_bin("postconf")
    p = subprocess.run([sys.executable, str(BENCH), "--runs", "1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:4] == ["measure", "pfy", "ms", "Postfix"]
    assert [l.split()[0] for l in lines[1:4]] == ["postconf"] * 3
    assert lines[-1].startswith("slowest pfy")
