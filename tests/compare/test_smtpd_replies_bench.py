"""bench/bench_smtpd.py runs, tiny, and prints its table (the full-size
figures are in the issue 5 report; this only keeps the benchmark working)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_smtpd_replies_helpers import postfix_available

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_smtpd.py"


def test_bench_smtpd_tiny(tmp_path):
    why = postfix_available()
    if why:
        pytest.skip(why)
    out = tmp_path / "figures.json"
    p = subprocess.run([sys.executable, str(BENCH), "--sessions", "10", "--rate-sessions", "30",
                        "--rate-concurrency", "5", "--big-mb", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pfy/postfix" in p.stdout and "targets:" in p.stdout
    figures = json.loads(out.read_text())
    for name in ("pfy", "postfix"):
        assert figures[name]["idle"]["served"] == 10, figures[name]
        assert figures[name]["rate"]["sessions"] == 30
        assert figures[name]["big"]["reply"].startswith("250 2.0.0 Ok: queued as")
    # Flat memory holds even tiny: no process grows by the message's size.
    assert figures["pfy"]["big"]["max_growth_mb"] < 20
