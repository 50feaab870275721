"""Keep bench/bench_tables.py working: run it with tiny sizes."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import pfy_bin

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_tables.py"


def test_bench_tables_tiny():
    pfy_bin("postmap")
    p = subprocess.run([sys.executable, str(BENCH), "--entries", "200", "--lookups", "100",
                        "--startup-runs", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:4] == ["measure", "pfy", "Postfix", "ratio"]
    assert any(l.startswith("build 200 entries") for l in lines)
    assert any(l.startswith("in-process lookups per second") for l in lines)
