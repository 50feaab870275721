#!/usr/bin/env python3
"""smtpd benchmark: pfy beside a private Debian Postfix, same run (issue 5).

    python3 bench/bench_smtpd.py [--sessions 1000] [--rate-sessions 2000]
                                 [--rate-concurrency 20] [--big-mb 50]
                                 [--only pfy|postfix] [--json FILE] [--keep]

Both systems run as root in temporary folders, listening on loopback only,
with the same main.cf settings; Postfix with its process limit raised so it
can serve every session at once (default_process_limit and the smtpd
maxproc = --sessions). RLIMIT_NOFILE is raised for this process and so for
both instances (they inherit it).

  idle      N concurrent ESMTP sessions (connect, banner, EHLO), all kept
            open; every one must have its 250 reply ("all served"). Then
            the total PSS (/proc/PID/smaps_rollup) of the instance's
            processes: master and every descendant.
  rate      R sessions of connect, banner, EHLO, QUIT with C clients at a
            time: sessions per second.
  big       one message of M MB over SMTP (smtplib, DATA), after a small
            warm-up message (so every process has loaded its code); every
            process's RSS sampled every 20 ms: the largest growth of any one
            process over its RSS before the message, and which process.

Prints a table with pfy/Postfix ratios. Targets: N = 1,000 sessions in
<= 300 MB total PSS, rate >= 0.5x Postfix's, the big message raises no
process's RSS by more than 20 MB. tests/compare/test_smtpd_replies_bench.py
runs it tiny. Root only (Postfix's master must be root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE.parent / "tests" / "compare"))

from instance import Instance  # noqa: E402
from test_smtpd_replies_helpers import PostfixInstance  # noqa: E402

HOST = "bench.example"
MAIN_CF = {
    "myhostname": HOST,
    "mydestination": f"{HOST}, localhost",
    "mynetworks": "127.0.0.0/8",
    "alias_maps": "",
    "local_recipient_maps": "",
    "local_transport": "discard:local",
    "default_transport": "discard:remote",
    "smtpd_timeout": "600s",
    "smtpd_client_connection_count_limit": "0",
    "smtpd_client_connection_rate_limit": "0",
    # Peer name lookups hit /etc/hosts for 127.0.0.1 on both sides.
}
TIMEOUT = 180          # any one phase


# -- process accounting ------------------------------------------------------------

def descendants(root_pid: int) -> list[int]:
    """root_pid and every process below it (from /proc, one pass)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
        return " ".join(w.decode(errors="replace") for w in words[:2] if w)[:60]
    except OSError:
        return "?"


# -- the three measurements ------------------------------------------------------

async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """One SMTP reply; its last line."""
    for _ in range(100):
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if len(line) < 4 or line[3:4] != b"-":
            return line
    raise ConnectionError("reply too long")


async def _idle_sessions(port: int, n: int, hold) -> int:
    """Open n sessions (banner + EHLO each), call hold() while all are
    open, and return how many got their 250 EHLO reply."""
    sem = asyncio.Semaphore(100)          # connects in flight at once
    conns = []

    async def one():
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60)
                conns.append(w)
                if not (await asyncio.wait_for(_read_reply(r), 60)).startswith(b"220"):
                    return False
                w.write(b"EHLO bench.client\r\n")
                return (await asyncio.wait_for(_read_reply(r), 60)).startswith(b"250")
            except (OSError, asyncio.TimeoutError, ConnectionError):
                return False
    results = await asyncio.gather(*(one() for _ in range(n)))
    served = sum(results)
    await asyncio.get_running_loop().run_in_executor(None, hold)
    for w in conns:
        with contextlib.suppress(Exception):
            w.close()
    return served


def idle(system, n: int) -> dict:
    out: dict = {}

    def hold():
        time.sleep(1.0)                   # let lazily started processes settle
        pids = descendants(system.master_pid())
        out["processes"] = len(pids)
        out["pss_mb"] = sum(pss_kb(p) for p in pids) / 1024
    out["served"] = asyncio.run(asyncio.wait_for(_idle_sessions(system.smtp_port, n, hold), TIMEOUT))
    out["sessions"] = n
    return out


async def _rate(port: int, total: int, concurrency: int) -> tuple[int, float]:
    done = 0
    left = total

    async def worker():
        nonlocal done, left
        while left > 0:
            left -= 1
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                await _read_reply(r)
                w.write(b"EHLO bench.client\r\n")
                await _read_reply(r)
                w.write(b"QUIT\r\n")
                await _read_reply(r)
                w.close()
                done += 1
            except (OSError, ConnectionError):
                pass
    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), TIMEOUT)
    return done, time.monotonic() - t0


def rate(system, total: int, concurrency: int) -> dict:
    asyncio.run(_rate(system.smtp_port, min(50, total), concurrency))      # warm up
    done, secs = asyncio.run(_rate(system.smtp_port, total, concurrency))
    return {"sessions": done, "seconds": secs, "per_second": done / secs if secs else 0.0}


def _send(port: int, body: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as s:
        s.ehlo("bench.client")
        s.mail("a@bench.client")
        s.rcpt(f"user@{HOST}")
        return s.data(body)


def big_message(system, mb: int) -> dict:
    # A small message first, through the whole path: every process has
    # started and loaded its code, so what follows is the message's cost.
    _send(system.smtp_port, b"Subject: warm-up\r\n\r\nhello\r\n")
    time.sleep(2.0)
    pids = descendants(system.master_pid())
    before = {p: rss_kb(p) for p in pids}
    peak = dict(before)
    names = {p: comm(p) for p in pids}
    first: dict[int, int] = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for p in descendants(system.master_pid()):
                if p not in names:
                    names[p] = comm(p)
                r = rss_kb(p)
                if r > peak.get(p, 0):
                    peak[p] = r
                if p not in before:
                    first.setdefault(p, r)  # a process started during the message
            time.sleep(0.02)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    line = b"x" * 78 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (mb * 1024 * 1024 // len(line))
    t0 = time.monotonic()
    try:
        code, text = _send(system.smtp_port, body)
    finally:
        time.sleep(1.0)            # delivery (discard) reads the queue file too
        stop.set()
        t.join(2)
    secs = time.monotonic() - t0
    # Growth of the processes that were there before the message (smtpd,
    # cleanup, qmgr...). A process started meanwhile (a delivery agent) has
    # no "before": its growth would be its interpreter's start-up, so it is
    # reported by its peak RSS instead.
    growth = {p: peak[p] - before[p] for p in peak if p in before}
    new_peaks = {f"{names.get(p, '?')} [{p}]": round(peak[p] / 1024, 1) for p in first}
    worst = max(growth, key=growth.get) if growth else 0
    return {"reply": f"{code} {text.decode(errors='replace')}"[:60], "seconds": secs,
            "max_growth_mb": growth.get(worst, 0) / 1024, "process": names.get(worst, "?"),
            "growth_by_process_mb": {f"{names.get(p, '?')} [{p}]": round(g / 1024, 1)
                                     for p, g in sorted(growth.items(), key=lambda x: -x[1])[:5]},
            "new_process_peak_rss_mb": new_peaks}


# -- the two systems ---------------------------------------------------------------

class Pfy:
    name = "pfy"

    def __init__(self, root: Path, extra: dict):
        cf = dict(MAIN_CF, **extra)
        self.inst = Instance(root, main_cf=cf)
        self.smtp_port = self.inst.smtp_port

    def start(self):
        self.inst.start()
        self.inst.wait_for_log("daemon started")

    def stop(self):
        self.inst.__exit__(None, None, None)

    def master_pid(self) -> int:
        return self.inst.master_pid()


class Postfix:
    name = "postfix"

    def __init__(self, root: Path, extra: dict, processes: int):
        cf = dict(MAIN_CF, **extra)
        cf["default_process_limit"] = str(max(100, processes))
        self.pf = PostfixInstance(root, cf)
        # The smtpd line's maxproc: field 7 of the smtp inet line.
        mc = self.pf.config / "master.cf"
        lines = []
        for line in mc.read_text().splitlines():
            f = line.split()
            if f[:2] == [f"127.0.0.1:{self.pf.smtp_port}", "inet"]:
                f[6] = str(max(100, processes))
                line = " ".join(f)
            lines.append(line)
        mc.write_text("\n".join(lines) + "\n")
        self.smtp_port = self.pf.smtp_port

    def start(self):
        self.pf.start()

    def stop(self):
        self.pf.stop()

    def master_pid(self) -> int:
        return self.pf.master_pid()


def run_one(system, args) -> dict:
    system.start()
    try:
        res = {"idle": idle(system, args.sessions)}
        res["rate"] = rate(system, args.rate_sessions, args.rate_concurrency)
        res["big"] = big_message(system, args.big_mb)
        return res
    finally:
        system.stop()


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    if hard != resource.RLIM_INFINITY and want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))   # root may raise hard
            return
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=1000, help="concurrent idle sessions")
    ap.add_argument("--rate-sessions", type=int, default=2000)
    ap.add_argument("--rate-concurrency", type=int, default=20)
    ap.add_argument("--big-mb", type=int, default=50)
    ap.add_argument("--only", choices=("pfy", "postfix"))
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_smtpd: root only (Postfix's master runs as root)", file=sys.stderr)
        return 2
    # Both sides: the client's sockets, and the servers' (inherited).
    raise_nofile(4 * args.sessions + 1024)
    extra = {"message_size_limit": str((args.big_mb + 10) * 1024 * 1024)}
    tmp = Path(tempfile.mkdtemp(prefix="bench_smtpd."))
    os.chmod(tmp, 0o755)
    results: dict = {}
    try:
        if args.only != "postfix":
            (tmp / "pfy").mkdir()
            results["pfy"] = run_one(Pfy(tmp / "pfy", extra), args)
        if args.only != "pfy":
            (tmp / "postfix").mkdir()
            results["postfix"] = run_one(Postfix(tmp / "postfix", extra, args.sessions), args)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def report(results: dict, args) -> None:
    def get(name, *keys):
        v = results.get(name)
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    def ratio(a, b):
        return f"{a / b:.2f}x" if a is not None and b else "-"

    def fmt(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "-"
    rows = [
        ("idle sessions served", ("idle", "served"), "d"),
        ("processes", ("idle", "processes"), "d"),
        ("total PSS, MB", ("idle", "pss_mb"), ".1f"),
        ("session rate, /s", ("rate", "per_second"), ".0f"),
        ("big: max RSS growth, MB", ("big", "max_growth_mb"), ".1f"),
        ("big: seconds", ("big", "seconds"), ".2f"),
    ]
    print(f"{'':28} {'pfy':>10} {'postfix':>10} {'pfy/postfix':>12}")
    for label, keys, spec in rows:
        a, b = get("pfy", *keys), get("postfix", *keys)
        print(f"{label:28} {fmt(a, spec):>10} {fmt(b, spec):>10} {ratio(a, b):>12}")
    for name in ("pfy", "postfix"):
        if name in results:
            print(f"{name}: big message: {get(name, 'big', 'reply')}; largest growth in "
                  f"{get(name, 'big', 'process')}; processes started meanwhile (peak RSS, MB): "
                  f"{get(name, 'big', 'new_process_peak_rss_mb')}")
    n = args.sessions
    a_pss, a_served = get("pfy", "idle", "pss_mb"), get("pfy", "idle", "served")
    a_rate, b_rate = get("pfy", "rate", "per_second"), get("postfix", "rate", "per_second")
    a_big = get("pfy", "big", "max_growth_mb")
    print("targets:")
    if a_pss is not None:
        print(f"  {n} sessions all served: {'yes' if a_served == n else 'NO'}; "
              f"PSS {a_pss:.0f} MB <= {300 * n / 1000:.0f} MB: {'yes' if a_pss <= 300 * n / 1000 else 'NO'}")
    if a_rate is not None and b_rate:
        print(f"  session rate {a_rate / b_rate:.2f}x >= 0.5x: {'yes' if a_rate >= 0.5 * b_rate else 'NO'}")
    if a_big is not None:
        print(f"  big message RSS growth {a_big:.1f} MB <= 20 MB: {'yes' if a_big <= 20 else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
