"""Issue 3 "Faults": kill -9 of any daemon at any moment of a stream of
deliveries loses nothing, and no recipient already marked done gets the
message again.

A root instance delivers to three throw-away users' Maildirs.  One thread
submits N messages with sendmail (each with its own Message-ID, to one to
three of the users) while a chaos loop, driven by a seeded RNG, sleeps a
random moment and SIGKILLs one of pickup, cleanup, qmgr, local or master
itself, many times over; when master dies, `postfix start` brings the
family back (its orphaned children must neither block that nor deliver
twice).  Then the queue drains and we check:

- zero loss: every message sendmail accepted (exit 0) is in the Maildir of
  each of its recipients at least once;
- no delivery after a done mark: for each queue file and recipient, once a
  `status=sent` line is logged (local writes the done mark before that
  line) the message is never delivered again after qmgr re-reads the file
  (its next "(queue active)" line);
- duplicates are counted and reported by cause: a delivery whose done mark
  was not written yet (same queue ID delivered twice: local or qmgr killed
  between the mailbox write and the mark/the reply), or a maildrop file
  handed to cleanup whose removal was not done yet (two queue IDs for one
  Message-ID: pickup or cleanup killed after the commit).  Postfix has
  both windows.

PFY_KILL9_SEED and PFY_KILL9_MESSAGES override the seed and the size.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from instance import Instance
from localusers import local_users, message_ids, messages_in_maildir, traversable_tmp

from pfy.ipc.trigger import trigger

SEED = int(os.environ.get("PFY_KILL9_SEED", "20261122"))
MESSAGES = int(os.environ.get("PFY_KILL9_MESSAGES", "60"))
VICTIMS = ("pickup", "cleanup", "qmgr", "local", "master")
MAX_KILLS = 40              # bounds on the chaos loop: count ...
CHAOS_SECONDS = 25.0        # ... and time
MIN_KILLS = 15
DRAIN_SECONDS = 45.0


def _master_cf() -> str:
    """The shipped master.cf without network services, and pickup woken
    every second: a trigger lost with a killed pickup must not leave mail
    in maildrop/ for the shipped 60 s."""
    from pfy.server.paths import shipped_file
    out = []
    for line in Path(shipped_file("master.cf")).read_text().splitlines():
        f = line.split()
        if f and not line[0].isspace() and not line.startswith("#") and len(f) >= 8:
            if f[1] == "inet":
                continue
            if f[0] == "pickup":
                f[5] = "1"
                line = " ".join(f)
        out.append(line)
    return "\n".join(out) + "\n"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} survived SIGKILL for {timeout}s")
        time.sleep(0.01)


def _victims(inst: Instance, name: str) -> list[int]:
    if name == "master":
        pid = inst.master_pid()
        return [pid] if pid and _alive(pid) else []
    return [pid for pid, cmd in inst.children() if cmd.split()[0].rsplit("/", 1)[-1] == name]


class Submitter(threading.Thread):
    """Sends MESSAGES messages, one sendmail run each, in order."""

    def __init__(self, inst: Instance, users, rng: random.Random):
        super().__init__(daemon=True)
        self.inst = inst
        self.plan = []
        for i in range(MESSAGES):
            rcpts = rng.sample([u.pw_name for u in users], rng.randint(1, len(users)))
            self.plan.append((f"<kill9.{SEED}.{i}@test.example>", rcpts))
        self.accepted: list[tuple[str, list[str]]] = []
        self.refused = 0
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for msgid, rcpts in self.plan:
                body = (f"Message-ID: {msgid}\nSubject: kill -9\n\nbody of {msgid}\n").encode()
                p = self.inst.command("sendmail", "-i", *rcpts, input=body, timeout=60)
                if p.returncode == 0:
                    self.accepted.append((msgid, rcpts))
                else:
                    self.refused += 1
        finally:
            self.done.set()


def _delivered(users) -> dict[str, collections.Counter]:
    return {u.pw_name: collections.Counter(message_ids(messages_in_maildir(
        Path(u.pw_dir) / "Maildir"))) for u in users}


def _missing(sub: Submitter, users) -> list[tuple[str, str]]:
    got = _delivered(users)
    return [(m, r) for m, rcpts in sub.accepted for r in rcpts if got[r][m] < 1]


def _check_log(log: str) -> tuple[int, list[str]]:
    """(deliveries repeated within the done-mark window, violations)."""
    sent = collections.Counter()
    reread_after_sent: set[tuple[str, str]] = set()
    marked: dict[str, set[str]] = collections.defaultdict(set)
    violations = []
    rx_sent = re.compile(r"postfix/local\[\d+\]: (\w+): to=<([^>]*)>.*status=sent")
    rx_active = re.compile(r"postfix/qmgr\[\d+\]: (\w+): from=<.*\(queue active\)")
    for line in log.splitlines():
        if m := rx_active.search(line):
            for rcpt in marked[m.group(1)]:
                reread_after_sent.add((m.group(1), rcpt))
        elif m := rx_sent.search(line):
            key = (m.group(1), m.group(2))
            sent[key] += 1
            if key in reread_after_sent:
                violations.append(f"{key}: delivered again after its done mark: {line}")
            marked[m.group(1)].add(m.group(2))
    return sum(n - 1 for n in sent.values()), violations


def test_kill9_chaos_loses_nothing(request):
    if os.geteuid() != 0:
        pytest.skip("needs root: three local users and delivery as each of them")
    rng = random.Random(SEED)
    started = time.monotonic()
    with traversable_tmp() as tmp, local_users(tmp, 3, prefix="pfyk") as users, \
            Instance(tmp / "inst", master_cf=_master_cf(), main_cf={
                "home_mailbox": "Maildir/",
                # retry soon: a delivery cut by a kill is deferred
                "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
                "queue_run_delay": "1s",
                # a process killed before its first client makes master
                # throttle the service (Postfix: "bad command startup"),
                # for 60 s by default
                "service_throttle_time": "1s"}) as inst:
        inst.start()
        sub = Submitter(inst, users, rng)
        sub.start()
        kills = collections.Counter()
        absent = 0
        chaos_end = time.monotonic() + CHAOS_SECONDS
        while sum(kills.values()) < MAX_KILLS and time.monotonic() < chaos_end:
            if sub.done.is_set() and sum(kills.values()) >= MIN_KILLS:
                break
            time.sleep(rng.uniform(0.02, 0.4))
            # Each daemon is as likely a victim as the next: pickup,
            # cleanup and local come and go with demand, so give the chosen
            # one a moment to be there.
            name = rng.choice(VICTIMS)
            wait_until = time.monotonic() + 1.0
            while not (pids := _victims(inst, name)) and time.monotonic() < wait_until:
                time.sleep(0.01)
            if not pids:
                absent += 1
                continue
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                absent += 1
                continue
            kills[name] += 1
            if name == "master":
                _wait_dead(pid)
                inst.postfix("start")       # orphans must not block this
        sub.join(120)
        assert sub.done.is_set(), "submissions did not finish"
        if inst.master_pid() is None or not _alive(inst.master_pid()):
            inst.postfix("start")

        # Drain: flush deferred/ and poke pickup until everything is there.
        deadline = time.monotonic() + DRAIN_SECONDS
        while (missing := _missing(sub, users)) and time.monotonic() < deadline:
            for service, req in (("qmgr", b"A"), ("pickup", b"W")):
                try:
                    trigger(str(inst.queue_dir / "public" / service), req)
                except OSError:
                    pass                    # backlog full: it has wake-ups waiting
            time.sleep(0.5)
        log = inst.log()
        if os.environ.get("PFY_KILL9_LOG"):
            Path(os.environ["PFY_KILL9_LOG"]).write_text(log)
        assert not missing, (f"LOST {len(missing)} deliveries: {missing[:10]}\n"
                             f"kills={dict(kills)}\n--- maillog tail:\n{log[-6000:]}")

        repeated, violations = _check_log(log)
        assert not violations, "\n".join(violations)
        got = _delivered(users)
        copies = sum(max(0, c - 1) for counter in got.values() for c in counter.values())
        qids_of = collections.defaultdict(set)
        for m in re.finditer(r"cleanup\[\d+\]: (\w+): message-id=(<[^>]*>)", log):
            qids_of[m.group(2)].add(m.group(1))
        resubmitted = sum(1 for mid, _ in sub.accepted if len(qids_of[mid]) > 1)
        wanted = sum(len(r) for _, r in sub.accepted)
        report = (f"kill -9 chaos (seed {SEED}): {sum(kills.values())} kills {dict(kills)}, "
                  f"{absent} moments with no daemon to kill; {len(sub.accepted)}/{MESSAGES} "
                  f"accepted ({sub.refused} refused); {wanted} deliveries wanted, 0 lost, "
                  f"{copies} duplicate copies: {repeated} repeated deliveries of one queue "
                  f"file before its done mark, {resubmitted} messages enqueued twice "
                  f"(maildrop hand-off window); {time.monotonic() - started:.1f}s")
        print(report)
        request.node.user_properties.append(("kill9", report))
        assert sum(kills.values()) >= MIN_KILLS, report
        assert len(kills) >= 4, report     # most kinds of daemon were hit
        assert len(sub.accepted) >= MESSAGES * 0.9, report
