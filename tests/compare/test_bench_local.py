"""bench/bench_local.py runs end to end at a tiny size (pfy beside a
private Debian Postfix): the harness works and prints every figure."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_local.py"


def test_bench_local_tiny(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: the benchmark delivers as a throw-away user")
    if not Path("/usr/sbin/postfix").exists():
        pytest.skip("Debian's postfix is not installed")
    out = tmp_path / "figures.json"
    p = subprocess.run([sys.executable, str(BENCH), "--messages", "6", "--sessions", "2",
                        "--sendmail-runs", "3", "--latency-samples", "3",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    figures = json.loads(out.read_text())
    for system in ("pfy", "postfix"):
        for key in ("sendmail_per_s", "latency_sendmail_p50_ms", "smtp_delivered_per_s",
                    "smtp_cpu_per_msg"):
            if system == "postfix" and key == "smtp_cpu_per_msg":
                # Postfix's CPU for a handful of messages can be under one
                # clock tick (10 ms): zero is a measurement, not a failure.
                assert figures[system][key] >= 0, (system, key)
            else:
                assert figures[system][key] > 0, (system, key)
    assert "pfy/postfix" in p.stdout
