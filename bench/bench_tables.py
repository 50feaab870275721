#!/usr/bin/env python3
"""Lookup table benchmark: pfy's postmap against Postfix's, same run, same input.

    python3 bench/bench_tables.py [--entries 1000000] [--lookups 100000] [--startup-runs 10]

Measures (issue 2, benchmark):
  build      postmap lmdb:FILE with N entries (pfy, then /usr/sbin/postmap)
  batch      postmap -q - lmdb:FILE with M keys on stdin (half present)
  startup    postmap -q KEY lmdb:FILE, one key, median of R runs
  in-process lookups/s through pfy.tables.open_table("lmdb:...").lookup()
and prints a table with the pfy/Postfix time ratio. Targets: build and batch
at most 2x Postfix's time; postmap -q KEY under 150 ms.

Postfix runs with -c pointing at an empty main.cf in the temporary folder,
so this machine's /etc/postfix never matters. Without /usr/sbin/postmap (or
postfix-lmdb) the Postfix columns say "n/a".
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POSTFIX_POSTMAP = "/usr/sbin/postmap"


def pfy_postmap() -> str:
    path = Path(sys.executable).parent / "postmap"
    if path.exists():
        return str(path)
    found = shutil.which("postmap", path=str(Path(sys.executable).parent))
    if not found:
        raise SystemExit("bench_tables: pfy's postmap is not installed next to this python")
    return found


def postfix_available(workdir: Path) -> bool:
    if not os.path.exists(POSTFIX_POSTMAP):
        return False
    # postconf -m lists the table types Postfix has (lmdb needs postfix-lmdb).
    probe = subprocess.run(["/usr/sbin/postconf", "-c", str(workdir), "-m"],
                           capture_output=True, text=True)
    return "lmdb" in probe.stdout.split()


def write_source(path: Path, entries: int) -> None:
    with open(path, "w") as f:
        for i in range(entries):
            f.write(f"user{i}@example{i % 1000}.com\tsmtp:[relay{i % 97}.example.net]:25\n")


def write_keys(path: Path, entries: int, lookups: int) -> None:
    rnd = random.Random(42)
    with open(path, "w") as f:
        for _ in range(lookups):
            # Half the keys exist, half do not: both paths of a lookup count.
            i = rnd.randrange(entries * 2)
            f.write(f"user{i}@example{i % 1000}.com\n")


def timed(argv: list[str], stdin_path: Path | None = None) -> float:
    stdin = open(stdin_path) if stdin_path else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        proc = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
    finally:
        if stdin_path:
            stdin.close()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"bench_tables: {' '.join(argv)} failed: {proc.stderr.strip()}")
    return elapsed


def in_process_rate(table_path: Path, keys_path: Path, limit: int) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pfy.tables import open_table
    table = open_table(f"lmdb:{table_path}")
    keys = [k.rstrip("\n") for k in open(keys_path)][:limit]
    start = time.perf_counter()
    for key in keys:
        table.lookup(key)
    elapsed = time.perf_counter() - start
    return len(keys) / elapsed if elapsed > 0 else float("inf")


def run(entries: int, lookups: int, startup_runs: int) -> list[tuple[str, float, float | None, str]]:
    ours = pfy_postmap()
    with tempfile.TemporaryDirectory(prefix="bench_tables.") as tmp:
        work = Path(tmp)
        (work / "main.cf").write_text("")
        ours_dir, theirs_dir = work / "pfy", work / "postfix"
        ours_dir.mkdir()
        theirs_dir.mkdir()
        (ours_dir / "main.cf").write_text("")
        (theirs_dir / "main.cf").write_text("")
        src_ours, src_theirs = ours_dir / "table", theirs_dir / "table"
        write_source(src_ours, entries)
        shutil.copy(src_ours, src_theirs)
        keys = work / "keys"
        write_keys(keys, entries, lookups)
        have_postfix = postfix_available(theirs_dir)

        rows = []
        t_ours = timed([ours, "-c", str(ours_dir), f"lmdb:{src_ours}"])
        t_theirs = timed([POSTFIX_POSTMAP, "-c", str(theirs_dir), f"lmdb:{src_theirs}"]) \
            if have_postfix else None
        rows.append((f"build {entries} entries (s)", t_ours, t_theirs, "<= 2x"))

        t_ours = timed([ours, "-c", str(ours_dir), "-q", "-", f"lmdb:{src_ours}"], keys)
        t_theirs = timed([POSTFIX_POSTMAP, "-c", str(theirs_dir), "-q", "-", f"lmdb:{src_theirs}"],
                         keys) if have_postfix else None
        rows.append((f"postmap -q - ({lookups} keys) (s)", t_ours, t_theirs, "<= 2x"))

        probe = "user1@example1.com"
        ours_runs = [timed([ours, "-c", str(ours_dir), "-q", probe, f"lmdb:{src_ours}"])
                     for _ in range(startup_runs)]
        theirs_runs = [timed([POSTFIX_POSTMAP, "-c", str(theirs_dir), "-q", probe,
                              f"lmdb:{src_theirs}"]) for _ in range(startup_runs)] \
            if have_postfix else None
        rows.append(("postmap -q KEY, median (ms)", statistics.median(ours_runs) * 1000,
                     statistics.median(theirs_runs) * 1000 if theirs_runs else None, "< 150 ms"))

        rate = in_process_rate(src_ours, keys, lookups)
        rows.append(("in-process lookups per second", rate, None, ""))
        return rows


def report(rows) -> str:
    out = [f"{'measure':40} {'pfy':>12} {'Postfix':>12} {'ratio':>8}  target"]
    for name, ours, theirs, target in rows:
        theirs_s = f"{theirs:12.3f}" if theirs is not None else f"{'n/a':>12}"
        ratio = f"{ours / theirs:8.2f}" if theirs else f"{'':>8}"
        out.append(f"{name:40} {ours:12.3f} {theirs_s} {ratio}  {target}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=100_000)
    ap.add_argument("--startup-runs", type=int, default=10)
    args = ap.parse_args(argv)
    print(report(run(args.entries, args.lookups, args.startup_runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
