#!/usr/bin/env python3
"""Local delivery benchmark: pfy beside a private Debian Postfix, same run.

    python3 bench/bench_local.py [--messages 300] [--sendmail-runs 100]
                                 [--latency-samples 100] [--sessions 20]
                                 [--only pfy|postfix] [--keep]

Both mail systems run as root in temporary folders with the same settings
(home_mailbox = Maildir/, one throw-away recipient whose home is in the
temporary folder, loopback only, no aliases), one after the other:

  sendmail   S sequential `sendmail -i user` runs: submissions/s (what a
             shell loop sees: the command's start-up is the cost), then the
             time until all S are delivered.
  smtp       smtp-source -s SESSIONS -m M into Maildir (needs our smtpd):
             delivered messages/s from the first connection to the last file.
  latency    L messages one at a time, p50 and p99: over SMTP from the
             "250 queued" reply to the file in Maildir/new (needs our smtpd),
             and through sendmail from the command's start and from its exit
             (pfy's sendmail spends a while exiting after it has triggered
             pickup, so "exit" flatters pfy; "start" includes the command).
  cpu        CPU seconds per message of the instance's processes (master and
             every descendant, dead ones included through cutime/cstime),
             beside the client's (sendmail, smtp-source) CPU.

Prints one table with pfy/Postfix ratios; targets (issue 3): delivery
throughput >= 0.5x, sequential sendmail >= 0.5x, p50 latency <= 3x.
`--json FILE` writes the figures too.  tests/compare/test_bench_local.py runs it
tiny.  Root only (both systems deliver as the recipient).

pfy's commands and daemons are those of the interpreter that runs this
script: run it with a non-editable install (`python3 -m venv /tmp/pv &&
/tmp/pv/bin/pip install . && /tmp/pv/bin/python bench/bench_local.py`), as
users install; an editable install's import finder costs every sendmail
run tens of milliseconds that users never pay.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

POSTFIX_SBIN = Path("/usr/sbin")
POSTFIX_MASTER_CF = Path("/etc/postfix/master.cf")
PFY_BIN = Path(sys.executable).parent
HOST = "localhost.localdomain"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Bounds on every wait: a wedged system ends the run with a message rather
# than hanging it.
DELIVERY_TIMEOUT = 300.0
POLL = 0.0005          # latency resolution: 0.5 ms
# main.cf settings given with --set, applied to both systems alike.
EXTRA_MAIN_CF: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- CPU accounting --------------------------------------------------------------

def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime+cutime+cstime seconds) from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text.rsplit(")", 1)[1].split()
    # fields after ")": state ppid ... utime(12) stime(13) cutime(14) cstime(15)
    return int(f[1]), sum(int(x) for x in f[11:15]) / CLK_TCK


def tree_cpu(root_pid: int) -> float:
    """CPU seconds of root_pid and all its descendants, the dead ones too
    (a reaped child's time is in its parent's cutime/cstime)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [root_pid], set()
    while todo and len(seen) < 100000:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def client_cpu() -> float:
    ru = os.times()
    return ru.children_user + ru.children_system


# -- the two mail systems ----------------------------------------------------------

class MailSystem:
    name = "?"

    def __init__(self, root: Path, user: pwd.struct_passwd):
        self.root = root
        self.user = user
        self.smtp_port = free_port()
        self.maildir_new = Path(user.pw_dir) / "Maildir" / "new"

    def sendmail_argv(self) -> list[str]:
        raise NotImplementedError

    def sendmail_env(self) -> dict:
        raise NotImplementedError

    def master_pid(self) -> int:
        raise NotImplementedError

    def has_smtpd(self) -> bool:
        return True

    def delivered(self) -> int:
        try:
            return len(os.listdir(self.maildir_new))
        except FileNotFoundError:
            return 0

    def sendmail(self, body: bytes) -> None:
        p = subprocess.run(self.sendmail_argv() + ["-i", self.user.pw_name], input=body,
                           env=self.sendmail_env(), capture_output=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"{self.name} sendmail exit {p.returncode}: {p.stderr!r}")

    def wait_delivered(self, count: int, timeout: float = DELIVERY_TIMEOUT) -> float:
        deadline = time.monotonic() + timeout
        while self.delivered() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {self.delivered()}/{count} delivered "
                                   f"after {timeout}s; see {self.root}")
            time.sleep(0.002)
        return time.monotonic()


class Postfix(MailSystem):
    """Debian's Postfix in a private folder: its own -c config, queue and
    data folders, maillog_file through postlogd (no syslog here)."""
    name = "postfix"

    def __init__(self, root: Path, user):
        super().__init__(root, user)
        self.config = root / "config"
        self.config.mkdir(parents=True)
        for d in ("queue", "data"):
            (root / d).mkdir()
        shutil.chown(root / "data", "postfix", "postfix")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": root / "queue", "data_directory": root / "data",
            "maillog_file": root / "maillog", "maillog_file_prefixes": root,
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "myhostname": HOST, "mydomain": "localdomain",
            "mydestination": "$myhostname, localhost", "mynetworks": "127.0.0.0/8",
            "home_mailbox": "Maildir/", "alias_maps": "", "alias_database": "",
            "smtpd_banner": "$myhostname ESMTP", "biff": "no",
            "shlib_directory": "/usr/lib/postfix", "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix", "manpage_directory": "/usr/share/man",
            "setgid_group": "postdrop", "mail_owner": "postfix",
        }
        main.update(EXTRA_MAIN_CF)
        (self.config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        # The shipped master.cf with smtpd on our port, no chroot (the jail
        # would need copies of /etc files), and postlogd for maillog_file.
        lines = []
        for line in POSTFIX_MASTER_CF.read_text().splitlines():
            f = line.split()
            if f and not line[0].isspace() and not line.startswith("#") and len(f) >= 8:
                if f[0] == "smtp" and f[1] == "inet":
                    f[0] = f"127.0.0.1:{self.smtp_port}"
                f[4] = "n"
                line = " ".join(f[:8]) + (" " + " ".join(f[8:]) if f[8:] else "")
            lines.append(line)
        if not any(ln.startswith("postlog") for ln in lines):
            lines.append("postlog unix-dgram n - n - 1 postlogd")
        (self.config / "master.cf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self._postfix("start")
        deadline = time.monotonic() + 30
        while not (self.root / "queue" / "pid" / "master.pid").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("postfix did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self._postfix("stop", check=False)

    def _postfix(self, *args: str, check: bool = True) -> None:
        p = subprocess.run([str(POSTFIX_SBIN / "postfix"), "-c", str(self.config), *args],
                           capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError(f"postfix {args}: {p.stderr}")

    def master_pid(self) -> int:
        return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])

    def sendmail_argv(self) -> list[str]:
        return [str(POSTFIX_SBIN / "sendmail")]

    def sendmail_env(self) -> dict:
        return dict(os.environ, MAIL_CONFIG=str(self.config))

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "maillog").read_text(errors="replace")
        return ""


class Pfy(MailSystem):
    name = "pfy"

    def __init__(self, root: Path, user):
        super().__init__(root, user)
        from instance import Instance
        self.inst = Instance(root, main_cf={
            "home_mailbox": "Maildir/", "myhostname": HOST, "max_idle": "100s",
            "alias_maps": "", "alias_database": "", **EXTRA_MAIN_CF})
        self.smtp_port = self.inst.smtp_port

    def start(self) -> None:
        self.inst.start()

    def stop(self) -> None:
        self.inst.__exit__(None, None, None)

    def master_pid(self) -> int:
        deadline = time.monotonic() + 10
        while (pid := self.inst.master_pid()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("pfy master pid not found")
            time.sleep(0.05)
        return pid

    def has_smtpd(self) -> bool:
        from pfy.server.paths import default_daemon_directory
        return (Path(default_daemon_directory()) / "smtpd").exists()

    def sendmail_argv(self) -> list[str]:
        return [str(PFY_BIN / "sendmail")]

    def sendmail_env(self) -> dict:
        return dict(os.environ, MAIL_CONFIG=str(self.inst.config_dir))

    def log(self) -> str:
        return self.inst.log()


# -- the measurements ------------------------------------------------------------

BODY = (b"Subject: bench\nFrom: bench@" + HOST.encode() + b"\n\n"
        + b"A line of text to make a small but not empty message body.\n" * 20)


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def _wait_one(ms: MailSystem, base: int) -> None:
    deadline = time.monotonic() + 60
    while ms.delivered() <= base:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{ms.name}: latency sample not delivered in 60s")
        time.sleep(POLL)


def measure(ms: MailSystem, args) -> dict:
    out: dict = {}
    ms.start()
    try:
        master = ms.master_pid()
        # Warm up: every daemon started once, as in a running system.
        ms.sendmail(BODY)
        ms.wait_delivered(1)
        base = ms.delivered()

        # Sequential sendmail runs.
        cpu0, ccpu0, t0 = tree_cpu(master), client_cpu(), time.monotonic()
        for _ in range(args.sendmail_runs):
            ms.sendmail(BODY)
        t1 = time.monotonic()
        t2 = ms.wait_delivered(base + args.sendmail_runs)
        n = args.sendmail_runs
        out["sendmail_per_s"] = n / (t1 - t0)
        out["sendmail_delivered_per_s"] = n / (t2 - t0)
        out["sendmail_cpu_per_msg"] = (tree_cpu(master) - cpu0) / n
        out["sendmail_client_cpu_per_msg"] = (client_cpu() - ccpu0) / n
        base = ms.delivered()

        # Latency, one message at a time.  Through sendmail: from the start
        # of the command (its own run time is part of what a user waits
        # for) and from its exit (accepted) to the file in Maildir/new.
        lat_start, lat_exit = [], []
        for _ in range(args.latency_samples):
            t_start = time.monotonic()
            ms.sendmail(BODY)
            t_exit = time.monotonic()
            _wait_one(ms, base)
            now = time.monotonic()
            lat_start.append(now - t_start)
            lat_exit.append(now - t_exit)
            base = ms.delivered()
        out["latency_sendmail_p50_ms"] = percentile(lat_start, 50) * 1000
        out["latency_sendmail_p99_ms"] = percentile(lat_start, 99) * 1000
        out["latency_accepted_p50_ms"] = percentile(lat_exit, 50) * 1000
        out["latency_accepted_p99_ms"] = percentile(lat_exit, 99) * 1000
        # Through SMTP: from the "250 queued" reply to the file.
        if ms.has_smtpd():
            import smtplib
            lat = []
            with smtplib.SMTP("127.0.0.1", ms.smtp_port, timeout=60) as smtp:
                smtp.ehlo("bench.example")
                for _ in range(args.latency_samples):
                    smtp.sendmail(f"bench@{HOST}", [f"{ms.user.pw_name}@{HOST}"], BODY)
                    t = time.monotonic()
                    _wait_one(ms, base)
                    lat.append(time.monotonic() - t)
                    base = ms.delivered()
            out["latency_smtp_p50_ms"] = percentile(lat, 50) * 1000
            out["latency_smtp_p99_ms"] = percentile(lat, 99) * 1000

        # SMTP in, Maildir out, SESSIONS parallel sessions.
        if ms.has_smtpd() and args.messages > 0:
            cpu0, ccpu0, t0 = tree_cpu(master), client_cpu(), time.monotonic()
            p = subprocess.run(
                [str(POSTFIX_SBIN / "smtp-source"), "-s", str(args.sessions), "-m",
                 str(args.messages), "-l", "1024", "-f", f"bench@{HOST}",
                 "-t", f"{ms.user.pw_name}@{HOST}", f"127.0.0.1:{ms.smtp_port}"],
                capture_output=True, timeout=DELIVERY_TIMEOUT)
            if p.returncode != 0:
                raise RuntimeError(f"smtp-source against {ms.name}: {p.stderr!r}")
            t2 = ms.wait_delivered(base + args.messages)
            out["smtp_delivered_per_s"] = args.messages / (t2 - t0)
            out["smtp_cpu_per_msg"] = (tree_cpu(master) - cpu0) / args.messages
            out["smtp_client_cpu_per_msg"] = (client_cpu() - ccpu0) / args.messages
    finally:
        ms.stop()
    return out


@contextlib.contextmanager
def bench_user(root: Path, name: str):
    home = root / "home" / name
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["useradd", "-M", "-U", "-d", str(home), "-s", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        pw = pwd.getpwnam(name)
        home.mkdir(parents=True)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        yield pw
    finally:
        subprocess.run(["userdel", name], capture_output=True)


ROWS = [
    ("sendmail_per_s", "sequential sendmail, submissions/s", "higher"),
    ("sendmail_delivered_per_s", "  same, delivered/s", "higher"),
    ("sendmail_cpu_per_msg", "  server CPU s/msg", "lower"),
    ("sendmail_client_cpu_per_msg", "  sendmail CPU s/msg", "lower"),
    ("latency_smtp_p50_ms", "latency SMTP 250->Maildir p50 ms", "lower"),
    ("latency_smtp_p99_ms", "latency SMTP 250->Maildir p99 ms", "lower"),
    ("latency_sendmail_p50_ms", "latency sendmail start->Maildir p50 ms", "lower"),
    ("latency_sendmail_p99_ms", "latency sendmail start->Maildir p99 ms", "lower"),
    ("latency_accepted_p50_ms", "latency sendmail exit->Maildir p50 ms", "lower"),
    ("latency_accepted_p99_ms", "latency sendmail exit->Maildir p99 ms", "lower"),
    ("smtp_delivered_per_s", "smtp-source -> Maildir, msgs/s", "higher"),
    ("smtp_cpu_per_msg", "  server CPU s/msg", "lower"),
    ("smtp_client_cpu_per_msg", "  smtp-source CPU s/msg", "lower"),
]


def report(results: dict[str, dict]) -> str:
    pf, py = results.get("postfix", {}), results.get("pfy", {})
    lines = [f"{'':40} {'pfy':>10} {'postfix':>10} {'pfy/postfix':>12}"]
    for key, label, _ in ROWS:
        a, b = py.get(key), pf.get(key)
        if a is None and b is None:
            continue
        fa = f"{a:10.4g}" if a is not None else f"{'n/a':>10}"
        fb = f"{b:10.4g}" if b is not None else f"{'n/a':>10}"
        ratio = f"{a / b:12.2f}" if a is not None and b else f"{'':>12}"
        lines.append(f"{label:40} {fa} {fb} {ratio}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=300, help="smtp-source messages")
    ap.add_argument("--sessions", type=int, default=20, help="smtp-source sessions")
    ap.add_argument("--sendmail-runs", type=int, default=100)
    ap.add_argument("--latency-samples", type=int, default=100)
    ap.add_argument("--only", choices=("pfy", "postfix"))
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a main.cf setting for both systems (e.g. max_use=1000)")
    args = ap.parse_args(argv)
    for item in args.set:
        name, _, value = item.partition("=")
        EXTRA_MAIN_CF[name.strip()] = value.strip()
    if os.geteuid() != 0:
        print("bench_local: needs root (delivery as the recipient, useradd)", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_local."))
    os.chmod(tmp, 0o755)
    try:
        with bench_user(tmp, f"pfyb{os.getpid() % 100000}") as user:
            systems = [("pfy", Pfy), ("postfix", Postfix)]
            if not (POSTFIX_SBIN / "postfix").exists():
                systems = systems[:1]
            for name, cls in systems:
                if args.only and args.only != name:
                    continue
                root = tmp / name
                root.mkdir()
                os.chmod(root, 0o755)
                shutil.rmtree(Path(user.pw_dir) / "Maildir", ignore_errors=True)
                ms = cls(root, user)
                try:
                    results[name] = measure(ms, args)
                except Exception:
                    sys.stderr.write(f"--- {name} log tail:\n" + ms.log()[-3000:] + "\n")
                    raise
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)
    print(f"messages={args.messages} sessions={args.sessions} sendmail_runs="
          f"{args.sendmail_runs} latency_samples={args.latency_samples}"
          + "".join(f" {k}={v}" for k, v in EXTRA_MAIN_CF.items()))
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
