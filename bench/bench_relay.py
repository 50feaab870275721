"""Relay throughput: smtp-source -> smtpd -> qmgr -> smtp -> smtp-sink,
pfy beside a private Debian Postfix with the same settings, same run.

    python3 bench/bench_relay.py [--messages 2000] [--sessions 20] [--sizes 4096,102400]
                                 [--destinations 100]

Prints messages/s (first accepted to last delivered, from the sink's
count), CPU seconds per message (all the instance's processes, from
/proc: utime+stime of master's children, collected as they exit and
sampled at the end) and the pfy/Postfix ratio, per message size; with
--destinations N also a run where the mail goes to N domains routed by
transport_maps to N sinks on 127.0.1.x (scheduler fairness: every
destination's first and last delivery time is printed as a spread).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from instance import Instance, free_port  # noqa: E402

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"


def cpu_of_tree(root_pid: int) -> float:
    """utime+stime (with reaped children) of a process and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    kids: dict[int, list[int]] = {}
    stats = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            st = Path(f"/proc/{e}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(e), int(st[1])
        kids.setdefault(ppid, []).append(pid)
        stats[pid] = st
    todo = [root_pid]
    while todo:
        p = todo.pop()
        st = stats.get(p)
        if st:
            total += sum(int(x) for x in st[11:15]) / tick
        todo += kids.get(p, [])
    return total


def start_sink(host: str, port: int) -> subprocess.Popen:
    return subprocess.Popen([SINK, "-c", "-u", "postfix", f"{host}:{port}", "256"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def wait_port(host, port):
    for _ in range(100):
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)


def count_log(path: Path, rx=re.compile(r"status=sent")) -> int:
    try:
        return sum(1 for ln in path.read_text(errors="replace").splitlines() if rx.search(ln))
    except OSError:
        return 0


def postfix_instance(root: Path, port: int, relay: str, extra: dict) -> tuple[list[str], Path]:
    cfg = root / "pf-config"
    cfg.mkdir(parents=True)
    q = root / "pf-queue"
    data = root / "pf-data"
    log = root / "pf-maillog"
    params = {
        "queue_directory": q, "data_directory": data, "maillog_file": log,
        "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
        "myhostname": "postfix.bench", "mydestination": "", "mynetworks": "127.0.0.0/8",
        "relayhost": relay, "compatibility_level": "3.6", "smtpd_banner": "$myhostname ESMTP",
        "smtp_tls_security_level": "none", "smtpd_tls_security_level": "none",
        "alias_maps": "", "alias_database": "", "local_recipient_maps": "",
    }
    params.update(extra)
    (cfg / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
    master = Path("/etc/postfix/master.cf").read_text()
    master = re.sub(r"^smtp(\s+inet\b)", f"127.0.0.1:{port}\\1", master, flags=re.M)
    master += "\npostlog   unix-dgram n  -       n       -       1       postlogd\n"
    (cfg / "master.cf").write_text(master)
    subprocess.run(["/usr/sbin/postfix", "-c", str(cfg), "check"], capture_output=True)
    return [str(cfg)], log


def run_source(port: int, n: int, sessions: int, size: int, rcpt_domains: list[str]) -> float:
    t0 = time.monotonic()
    procs = []
    per = max(1, len(rcpt_domains))
    share = n // per
    for i, dom in enumerate(rcpt_domains or ["remote.example"]):
        procs.append(subprocess.Popen([SOURCE, "-c" if False else "-d", "-s", str(max(1, sessions // per)),
                                       "-m", str(share), "-l", str(size), "-f", "a@bench.example",
                                       "-t", f"b@{dom}", f"127.0.0.1:{port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in procs:
        p.wait()
    return time.monotonic() - t0


def measure(kind: str, root: Path, n: int, sessions: int, size: int, sink_port: int,
            domains: list[str], transport: str | None) -> tuple[float, float]:
    smtp_port = free_port()
    extra = {}
    if transport:
        extra["transport_maps"] = f"texthash:{transport}"
    if kind == "pfy":
        main = {"myhostname": "pfy.bench", "relayhost": f"[127.0.0.1]:{sink_port}",
                "mydestination": "", "alias_maps": "", "local_recipient_maps": "", **extra}
        inst = Instance(root / "pfy", main_cf=main)
        inst.start()
        master = inst.master_pid()
        log = inst.maillog
        stop = inst.__exit__
        port = inst.smtp_port
    else:
        port = smtp_port
        cfg, log = postfix_instance(root, port, f"[127.0.0.1]:{sink_port}", extra)
        subprocess.run(["/usr/sbin/postfix", "-c", cfg[0], "start"], check=True, capture_output=True)
        time.sleep(1)
        master = int(Path(root / "pf-queue" / "pid" / "master.pid").read_text().split()[0])

        def stop(*_):
            subprocess.run(["/usr/sbin/postfix", "-c", cfg[0], "stop"], capture_output=True)
    wait_port("127.0.0.1", port)
    cpu0 = cpu_of_tree(master)
    t0 = time.monotonic()
    run_source(port, n, sessions, size, domains)
    deadline = time.monotonic() + 600
    while count_log(log) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    cpu = cpu_of_tree(master) - cpu0
    got = count_log(log)
    stop(None, None, None)
    return got / elapsed, cpu / max(1, got)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--sizes", default="4096,102400")
    ap.add_argument("--destinations", type=int, default=0)
    a = ap.parse_args()
    sink_port = free_port()
    sink = start_sink("127.0.0.1", sink_port)
    wait_port("127.0.0.1", sink_port)
    try:
        print(f"{'run':28} {'pfy msg/s':>10} {'postfix msg/s':>14} {'ratio':>6} "
              f"{'pfy cpu/msg':>12} {'pf cpu/msg':>11} {'cpu ratio':>9}")
        runs = [(int(s), []) for s in a.sizes.split(",")]
        for size, doms in runs:
            row = {}
            for kind in ("pfy", "postfix"):
                root = Path(tempfile.mkdtemp(prefix=f"bench-relay-{kind}-"))
                try:
                    row[kind] = measure(kind, root, a.messages, a.sessions, size, sink_port, doms, None)
                finally:
                    shutil.rmtree(root, ignore_errors=True)
            (pr, pc), (fr, fc) = row["pfy"], row["postfix"]
            print(f"{f'{size} bytes, {a.sessions} sessions':28} {pr:10.1f} {fr:14.1f} "
                  f"{pr / fr if fr else 0:6.2f} {pc:12.4f} {fc:11.4f} {pc / fc if fc else 0:9.2f}")
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait()


if __name__ == "__main__":
    main()
