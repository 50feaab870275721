"""bench/bench_relay.py runs end to end at a tiny size (pfy beside a private
Debian Postfix, smtp-source -> smtpd -> smtp -> smtp-sink, plus the
several-destinations run): the harness works and prints every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import postfix_bin

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_relay.py"


def test_bench_relay_tiny(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: Postfix's master and smtp-sink -u postfix")
    postfix_bin("smtp-source")
    out = tmp_path / "figures.json"
    p = subprocess.run([sys.executable, str(BENCH), "--messages", "20", "--sessions", "4",
                        "--sizes", "4096,102400", "--big-messages", "5",
                        "--destinations", "3", "--dest-messages", "6", "--warmup", "3",
                        "--rounds", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    figures = json.loads(out.read_text())
    assert len(figures) == 3, figures
    for label, row in figures.items():
        for system in ("pfy", "postfix"):
            r = row[system]
            assert r["delivered"] >= (6 if "destinations" in label else
                                      5 if "102400" in label else 20), (label, system, r)
            # CPU comes from /proc in clock ticks (10 ms): Postfix relays
            # 6 small messages in less than one, so 0 is a valid figure.
            assert r["rate"] > 0 and r["cpu_per_msg"] >= 0, (label, system, r)
            if "destinations" in label:
                assert r["served"] == 3, (label, system, r)
    assert "ratio" in p.stdout and "destinations served 3/3" in p.stdout
    assert all(len(row["ratios"]) == 2 for row in figures.values())
    assert "rounds: pfy/Postfix" in p.stdout
