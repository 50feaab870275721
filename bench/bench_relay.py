"""Relay throughput: smtp-source -> smtpd -> qmgr -> smtp -> smtp-sink,
pfy beside a private Debian Postfix with the same settings, same run.

    python3 bench/bench_relay.py [--messages 2000] [--sessions 20] [--sizes 4096,102400]
                                 [--rounds 3] [--warmup 100] [--destinations 100]
                                 [--dest-messages 1000]
                                 [--only pfy|postfix] [--json FILE]

For each message size, each system in turn relays --messages messages that
smtp-source sends over --sessions parallel sessions; everything goes to one
smtp-sink through relayhost = [127.0.0.1]:PORT, after --warmup untimed
messages through the same freshly started system (so that the figures
are a running system's, not its processes' start; the warm-up's time and
CPU are printed too), --rounds times per system, alternating (a shared
machine's slow minute then falls on both; each system's median round is
shown, and every round's ratio).  Printed per size:

  msg/s      messages relayed per second: from the first connection of
             smtp-source to the last "status=sent" line in the system's
             maillog (both systems log through their own maillog_file).
  cpu/msg    CPU seconds per message of the instance: utime+stime of master
             and every process under it, including the children it reaped
             (cutime/cstime: daemons that exited during the run), from
             /proc, end minus start.
  ratio      pfy / Postfix.

--destinations N adds a run where the mail goes to N domains d0.bench ...,
each routed by transport_maps to its own smtp-sink address 127.0.1.K (so
the scheduler sees N destinations, each with its own concurrency window).
It prints, per system, the spread of the per-destination completion times
(the time of the last delivery to each destination, from the first
accepted message): with a fair scheduler the first and the last
destination finish close together, and no destination waits for another.

Postfix runs from its Debian install with its own config directory
(postfix -c DIR start; no /etc/postfix/main.cf needed: daemon_directory
etc. are set in the private main.cf), queue and data folders in a temp
folder, maillog_file through postlogd, smtpd on a loopback port, and is
stopped afterwards even when the run fails.  Same settings both sides:
no TLS, no local delivery, relayhost to the sink, default concurrency.

PostfixPeer is also what the e2e tests use as a receiving peer
(tests/e2e/test_smtp_to_postfix.py, test_smtp_tls.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

POSTFIX_SBIN = Path("/usr/sbin")
SINK = str(POSTFIX_SBIN / "smtp-sink")
SOURCE = str(POSTFIX_SBIN / "smtp-source")
# Every wait is bounded: a broken run ends with what it has.
DELIVERY_TIMEOUT = 900
SENT_RX = re.compile(r"postfix/smtp\[\d+\]: \w+: to=<[^>]*@([^>]*)>.*status=sent")
LOG_TIME_RX = re.compile(r"^(\w{3} +\d+ \d\d:\d\d:\d\d)")


# -- a private Debian Postfix ---------------------------------------------------------

def _traversable(path: Path) -> None:
    """mail_owner must reach the instance folder (pytest's tmp is 0700)."""
    os.chmod(path, 0o755)
    for parent in path.parents:
        if str(parent) in ("/", "/tmp"):
            break
        with contextlib.suppress(OSError):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, (mode & 0o7777) | 0o011)


class PostfixPeer:
    """Debian's Postfix in a private folder, never the system service.

        with PostfixPeer(tmp_path, {"relayhost": "[127.0.0.1]:2525"}) as pf:
            pf.start(); pf.smtp_port; pf.wait_for_log(r"status=sent")

    Layout: root/{config,queue,data,maillog}.  main.cf sets every path
    Postfix would take from /etc/postfix/main.cf (daemon_directory,
    shlib_directory, meta_directory), so `postfix -c DIR` works whether or
    not the system has a default instance; inet_interfaces = 127.0.0.1;
    maillog_file through postlogd (there is no syslog).  master.cf is
    Debian's with smtpd moved to a free loopback port and chroot off (a
    jail would need copies of /etc files).  master_extra: more master.cf
    lines ("{smtp_port}" substituted)."""

    def __init__(self, root: Path, main_cf: dict | None = None, master_extra: str = "",
                 hostname: str = "postfix.peer", host: str = "127.0.0.1"):
        self.root = Path(root)
        # Another loopback address than pfy's own (127.0.0.1) when pfy must
        # reach it through DNS: pfy refuses an MX that is itself.
        self.host = host
        self.config = self.root / "config"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.maillog = self.root / "maillog"
        self.smtp_port = free_port(host)
        for d in (self.config, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        _traversable(self.root)
        if os.geteuid() == 0:
            shutil.chown(self.data, "postfix", "postfix")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue, "data_directory": self.data,
            "maillog_file": self.maillog, "maillog_file_prefixes": self.root,
            # Postfix finds only 127.0.0.1 on lo; a service on another
            # loopback address is set in master.cf alone.
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "myhostname": hostname, "mydomain": "peer.invalid",
            "mydestination": "", "mynetworks": "127.0.0.0/8",
            "alias_maps": "", "alias_database": "", "local_recipient_maps": "",
            "smtpd_banner": "$myhostname ESMTP", "biff": "no",
            "shlib_directory": "/usr/lib/postfix", "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix", "manpage_directory": "/usr/share/man",
            "setgid_group": "postdrop", "mail_owner": "postfix",
            "smtp_tls_security_level": "none", "smtpd_tls_security_level": "none",
        }
        main.update(main_cf or {})
        (self.config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            f = line.split()
            if f and not line[0].isspace() and not line.startswith("#") and len(f) >= 8:
                if f[0] == "smtp" and f[1] == "inet":
                    f[0] = f"{host}:{self.smtp_port}"
                elif f[1] == "inet":
                    continue                     # submission, smtps: not wanted
                f[4] = "n"
                line = " ".join(f[:8]) + (" " + " ".join(f[8:]) if f[8:] else "")
            lines.append(line)
        if not any(ln.startswith("postlog") for ln in lines):
            lines.append("postlog unix-dgram n - n - 1 postlogd")
        text = "\n".join(lines) + "\n" + master_extra.replace("{smtp_port}", str(self.smtp_port))
        (self.config / "master.cf").write_text(text)

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([str(POSTFIX_SBIN / "postfix"), "-c", str(self.config), *args],
                           capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {p.stderr.strip()}\n{self.log()}")
        return p

    def command(self, name: str, *args: str, input: bytes | None = None):
        return subprocess.run([str(POSTFIX_SBIN / name), *args], input=input,
                              env=dict(os.environ, MAIL_CONFIG=str(self.config)),
                              capture_output=True, timeout=60)

    def start(self) -> None:
        self.postfix("start")
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.smtp_port), 0.5).close()
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not start\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        pid = self.master_pid()
        self.postfix("stop", check=False)
        # postfix stop returns before master's children are gone; a run
        # that follows must not share the CPU with them.
        deadline = time.monotonic() + 10
        while pid and time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> list[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [ln for ln in self.log().splitlines() if rx.search(ln)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} line(s) matching {pattern!r} in the Postfix "
                                     f"peer's maillog within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def __enter__(self) -> "PostfixPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- measuring -------------------------------------------------------------------------

def cpu_of_tree(root_pid: int) -> float:
    """utime+stime+cutime+cstime of a process and all its descendants:
    the cumulative CPU of everything the instance ran, including daemons
    that exited (their time is in their parent's cutime once reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    kids: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
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
    total = 0.0
    todo = [root_pid]
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        st = stats.get(p)
        if st:
            total += sum(int(x) for x in st[11:15]) / tick
        todo += kids.get(p, [])
    return total


def cpu_by_process(root_pid: int) -> dict[str, float]:
    """CPU seconds of each live process under root_pid, by its first
    command-line word (smtpd, qmgr, smtp...): where the time goes."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            st = Path(f"/proc/{e}/stat").read_text().rsplit(")", 1)[1].split()
            if int(st[1]) != root_pid:
                continue
            cmd = Path(f"/proc/{e}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, UnicodeDecodeError):
            continue
        name = os.path.basename(cmd.split()[0]) if cmd.strip() else "?"
        out[name] = out.get(name, 0.0) + sum(int(x) for x in st[11:13]) / tick
    return out


class Sinks:
    """smtp-sink processes, one per address; counted by their own -c output
    is not needed: the systems' maillogs say what was delivered."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, host: str, port: int) -> None:
        # -c: count; 256 = listen backlog; -u: drop root; one sink serves
        # every session (it is event driven).
        p = subprocess.Popen([SINK, "-u", "postfix", f"{host}:{port}", "256"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection((host, port), 0.2).close()
                return
            time.sleep(0.02)
        raise RuntimeError(f"smtp-sink did not listen on {host}:{port}")

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def sent_lines(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if SENT_RX.search(ln)]


def run_source(port: int, n: int, sessions: int, size: int, domains: list[str]) -> None:
    """smtp-source: one process per recipient domain (it has one -t), the
    sessions and messages shared out between them."""
    doms = domains or ["remote.example"]
    per_dom, extra = divmod(n, len(doms))
    sess = max(1, sessions // len(doms))
    procs = []
    for i, dom in enumerate(doms):
        count = per_dom + (1 if i < extra else 0)
        if count == 0:
            continue
        procs.append(subprocess.Popen(
            [SOURCE, "-d", "-s", str(min(sess, count)), "-m", str(count), "-l", str(size),
             "-f", "a@source.example", "-t", f"b@{dom}", "-M", "source.example",
             f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # Many smtp-source processes at once would measure fork storms,
        # not mail: start them in small groups.
        if len(procs) % 10 == 0:
            time.sleep(0.05)
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    for p in procs:
        try:
            p.wait(max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _log_seconds(line: str) -> float | None:
    m = LOG_TIME_RX.match(line)
    if not m:
        return None
    t = time.strptime(f"{time.localtime().tm_year} {m.group(1)}", "%Y %b %d %H:%M:%S")
    return time.mktime(t)


def _wait_sent(get_log, count: int) -> int:
    """Poll the maillog until ``count`` deliveries are logged (bounded)."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    got = 0
    while time.monotonic() < deadline:
        got = len(sent_lines(get_log()))
        if got >= count:
            break
        time.sleep(0.02)
    return got


def measure(kind: str, root: Path, n: int, sessions: int, size: int, sink_port: int,
            domains: list[str] | None = None, transport: Path | None = None,
            warmup: int = 0) -> dict:
    """One system, one run; returns rate, cpu per message and, with several
    domains, each domain's completion time (seconds after the start).

    With ``warmup``, that many messages go through first, untimed: the
    figures are then the steady state of a running system, not the start
    of its processes (master starts each daemon at its first client; a
    Python daemon's start costs 0.1-0.3 s of CPU, once per max_use
    clients).  The warm-up's own time and CPU are returned as "cold"."""
    common = {"mydestination": "", "alias_maps": "", "local_recipient_maps": "",
              "relayhost": f"[127.0.0.1]:{sink_port}", "mynetworks": "127.0.0.0/8",
              "smtpd_banner": "$myhostname ESMTP", "smtp_tls_security_level": "none",
              "smtpd_tls_security_level": "none", "inet_protocols": "ipv4"}
    if transport:
        common["transport_maps"] = f"texthash:{transport}"
    if kind == "pfy":
        sys_ = Instance(root / "pfy", main_cf={"myhostname": "pfy.bench", **common})
        get_log = sys_.log
        port = sys_.smtp_port
    else:
        sys_ = PostfixPeer(root / "postfix", {"myhostname": "postfix.bench", **common})
        get_log = sys_.log
        port = sys_.smtp_port
    try:
        sys_.start()
        master = sys_.master_pid()
        cold = None
        if warmup:
            cpu0 = cpu_of_tree(master)
            t0 = time.monotonic()
            run_source(port, warmup, sessions, size, domains or [])
            _wait_sent(get_log, warmup)
            cold = {"messages": warmup, "seconds": time.monotonic() - t0,
                    "cpu": cpu_of_tree(master) - cpu0}
        before = len(sent_lines(get_log()))
        by_process0 = cpu_by_process(master)
        cpu0 = cpu_of_tree(master)
        t0 = time.monotonic()
        wall0 = time.time()
        run_source(port, n, sessions, size, domains or [])
        got = _wait_sent(get_log, before + n) - before
        elapsed = time.monotonic() - t0
        cpu = cpu_of_tree(master) - cpu0
        by_process = {k: v - by_process0.get(k, 0.0) for k, v in cpu_by_process(master).items()}
        out = {"delivered": got, "seconds": elapsed, "rate": got / elapsed if elapsed else 0.0,
               "cpu_per_msg": cpu / max(1, got), "cold": cold,
               "cpu_by_process": {k: round(v, 2) for k, v in by_process.items()}}
        if domains:
            last: dict[str, float] = {}
            for ln in sent_lines(get_log())[before:]:
                dom = SENT_RX.search(ln).group(1)
                t = _log_seconds(ln)
                if t is not None:
                    last[dom] = max(last.get(dom, 0.0), t - wall0)
            out["served"] = len(last)
            done = sorted(last.values())
            out["completion"] = done
        return out
    finally:
        sys_.stop() if kind == "postfix" else sys_.__exit__(None, None, None)


def _row(label: str, res: dict) -> str:
    py, pf = res.get("pfy"), res.get("postfix")

    def f(d, k, fmt):
        return format(d[k], fmt) if d else "-"
    ratio = f"{py['rate'] / pf['rate']:.2f}" if py and pf and pf["rate"] else "-"
    cratio = (f"{py['cpu_per_msg'] / pf['cpu_per_msg']:.2f}"
              if py and pf and pf["cpu_per_msg"] else "-")
    return (f"{label:30} {f(py, 'rate', '.1f'):>10} {f(pf, 'rate', '.1f'):>14} {ratio:>6} "
            f"{f(py, 'cpu_per_msg', '.4f'):>12} {f(pf, 'cpu_per_msg', '.4f'):>11} {cratio:>9}")


def measure_rounds(kinds: list[str], rounds: int, run) -> dict:
    """run(kind, round) -> figures, for each system in turn, ``rounds``
    times (alternating, so a slow minute of a shared machine falls on
    both).  Each system's row is its median-rate round; "rounds" keeps
    every round's rate and "ratios" each round's pfy/Postfix ratio."""
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds:
            runs[kind].append(run(kind, r))
    res = {}
    for kind, got in runs.items():
        ordered = sorted(got, key=lambda x: x["rate"])
        res[kind] = dict(ordered[len(ordered) // 2], rounds=[x["rate"] for x in got])
    if "pfy" in runs and "postfix" in runs:
        res["ratios"] = [p["rate"] / q["rate"] if q["rate"] else 0.0
                         for p, q in zip(runs["pfy"], runs["postfix"])]
    return res


def _print_rounds(res: dict) -> None:
    ratios = res.get("ratios") or []
    if len(ratios) > 1:
        print("  rounds: pfy/Postfix " + ", ".join(f"{r:.2f}" for r in ratios)
              + f" (median {sorted(ratios)[len(ratios) // 2]:.2f}; the row shows each "
              "system's median round)", flush=True)


def _print_cold(res: dict, kinds: list[str]) -> None:
    """The warm-up, with each system's process starts in it."""
    parts = []
    for kind in kinds:
        cold = res[kind].get("cold")
        if cold:
            parts.append(f"{kind} {cold['seconds']:.2f} s, {cold['cpu']:.2f} s CPU")
    if parts:
        n = res[kinds[0]]["cold"]["messages"]
        print(f"  first {n} messages from a fresh start (untimed): " + "; ".join(parts), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--sizes", default="4096,102400")
    ap.add_argument("--big-messages", type=int, default=0,
                    help="messages for sizes over 64 KB (default: --messages / 4)")
    ap.add_argument("--destinations", type=int, default=0)
    ap.add_argument("--dest-messages", type=int, default=0,
                    help="messages in the destinations run (default: --messages)")
    ap.add_argument("--only", choices=("pfy", "postfix"))
    ap.add_argument("--json")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of each system per size, alternating; the medians are shown")
    ap.add_argument("--warmup", type=int, default=100,
                    help="untimed messages through each system first (0: time the cold start)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also print CPU seconds per daemon (live processes)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_relay: run as root (Postfix's master and the sinks need it)", file=sys.stderr)
        return 2
    kinds = [a.only] if a.only else ["pfy", "postfix"]
    figures: dict = {}
    sinks = Sinks()
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    try:
        sink_port = free_port()
        sinks.start("127.0.0.1", sink_port)
        print(f"{'run':30} {'pfy msg/s':>10} {'postfix msg/s':>14} {'ratio':>6} "
              f"{'pfy cpu/msg':>12} {'pf cpu/msg':>11} {'cpu ratio':>9}", flush=True)
        for size in (int(s) for s in a.sizes.split(",") if s):
            n = a.messages if size <= 65536 else (a.big_messages or max(1, a.messages // 4))
            res = measure_rounds(kinds, a.rounds, lambda kind, r: measure(
                kind, tmp / f"{kind}-{size}-{r}", n, a.sessions, size, sink_port,
                warmup=a.warmup))
            label = f"{size} B x{n}, {a.sessions} sessions"
            figures[label] = res
            print(_row(label, res), flush=True)
            _print_rounds(res)
            _print_cold(res, kinds)
            if a.breakdown:
                for kind in kinds:
                    procs = sorted(res[kind]["cpu_by_process"].items(), key=lambda kv: -kv[1])
                    print(f"  {kind:8} cpu s: " + ", ".join(f"{k} {v:.2f}" for k, v in procs),
                          flush=True)
        if a.destinations:
            nd = a.destinations
            n = a.dest_messages or a.messages
            # One sink per destination on 127.0.1.K, all on one port.
            dport = free_port()
            domains = [f"d{i}.bench" for i in range(nd)]
            tmap = tmp / "transport"
            tmap.write_text("".join(f"{d} smtp:[127.0.1.{i + 1}]:{dport}\n"
                                    for i, d in enumerate(domains)))
            os.chmod(tmp, 0o755)
            for i in range(nd):
                sinks.start(f"127.0.1.{i + 1}", dport)
            res = measure_rounds(kinds, a.rounds, lambda kind, r: measure(
                kind, tmp / f"{kind}-dest-{r}", n, a.sessions, 4096, sink_port,
                domains, tmap, warmup=a.warmup))
            label = f"{nd} destinations x{n // nd}"
            figures[label] = res
            print(_row(label, res), flush=True)
            _print_rounds(res)
            for kind in kinds:
                r = res[kind]
                done = r["completion"]
                if done:
                    print(f"  {kind:8} destinations served {r['served']}/{nd}; completion "
                          f"first {done[0]:.0f}s, median {done[len(done) // 2]:.0f}s, "
                          f"last {done[-1]:.0f}s (whole run {r['seconds']:.1f}s)", flush=True)
                else:
                    print(f"  {kind:8} nothing delivered", flush=True)
    finally:
        sinks.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
