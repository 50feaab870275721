"""kill -9 of pickup at random moments loses no mail (DESIGN.md "The queue").

pickup removes a maildrop file only after cleanup has answered with the
queue ID, i.e. after cleanup's fsync and rename: a pickup killed at any
moment before that leaves the file for its successor, a pickup killed
between cleanup's answer and the unlink leaves a file that is queued a
second time (at-least-once, as Postfix).

N messages of ~64 KB (so pickup is caught mid-stream, not only between
files) wait in maildrop/ while the instance is down; then a real instance
(master, pickup, cleanup, qmgr, through their sockets) starts and a
seeded chaos loop SIGKILLs pickup many times, bounded in count and time,
while master restarts it and its 1 s timer keeps it busy.  The route for
every message is "retry:", so qmgr defers them and each committed queue
file shows up once as "ID: from=<...> (queue active)".  At the end every
Message-ID must be in at least one committed queue file; duplicates are
counted and printed.

As root the messages are submitted by "nobody" (pickup's untrusted path);
otherwise by the instance's own user.  PFY_KILL9_SEED sets the seed.
"""

from __future__ import annotations

import io
import os
import random
import re
import signal
import time
from pathlib import Path

from instance import Instance
from localusers import traversable_tmp

SEED = int(os.environ.get("PFY_KILL9_SEED", "20261122"))
MESSAGES = 60
BODY_LINES = 800                # x 80 bytes: ~64 KB a message
MAX_KILLS = 30                  # bounds of the chaos loop: count ...
CHAOS_SECONDS = 20.0            # ... and time
MIN_KILLS = 8
DRAIN_SECONDS = 60.0
# Enough that the orphan is still draining when the new master's pickup
# starts (a few seconds of work).
ORPHAN_MESSAGES = 200


def master_cf() -> str:
    """The shipped master.cf without network services; pickup woken every
    second, so a wakeup lost with a killed pickup costs a second."""
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


def submit_all(inst: Instance, msgids: list[str]) -> None:
    """sendmail's own code, in a child as nobody when we are root (the
    kernel then makes nobody the owner of each file)."""
    from pfy.cli import sendmail
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            if os.geteuid() == 0:
                import pwd
                pw = pwd.getpwnam("nobody")
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
            filler = b"".join(b"%078d\n" % n for n in range(BODY_LINES))
            for msgid in msgids:
                body = b"Message-ID: " + msgid.encode() + b"\nSubject: k9\n\n" + filler
                rc = sendmail.run(["-C", str(inst.config_dir), "-i", "-f", "s@example.com",
                                   "u@example.com"], "sendmail",
                                  io.BufferedReader(io.BytesIO(body)), lambda s, m: None)
                if rc != 0:
                    os._exit(2)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"submission failed: {status:#x}"


def pickups(inst: Instance) -> list[int]:
    return [pid for pid, cmd in inst.children()
            if cmd.split()[0].rsplit("/", 1)[-1] == "pickup"]


def queued_message_ids(log: str) -> dict[str, set[str]]:
    """Message-ID -> queue IDs of the committed files qmgr saw."""
    active = set(re.findall(r"qmgr\[\d+\]: (\w+): from=<s@example.com>, .*\(queue active\)", log))
    msgid_of = dict(re.findall(r"cleanup\[\d+\]: (\w+): message-id=(<[^>]*>)", log))
    queued: dict[str, set[str]] = {}
    for qid in active:
        queued.setdefault(msgid_of.get(qid, "?"), set()).add(qid)
    return queued


def test_orphaned_pickup_does_not_race_the_new_one():
    """master killed with -9 mid-drain and started again: the orphaned
    pickup stops between files (its status channel reads EOF) and the new
    one skips the file the orphan holds (flock) or has just removed
    (st_nlink 0): every message queued, none twice."""
    count = ORPHAN_MESSAGES
    msgids = [f"<pickup-orphan.{SEED}.{i}@test.example>" for i in range(count)]
    with traversable_tmp("pfy-pickup-orphan-") as tmp:
        with Instance(tmp / "inst", master_cf=master_cf(),
                      main_cf={"default_transport": "retry:4.3.0 kept by the test",
                               "local_transport": "retry:4.3.0 kept by the test",
                               "alias_maps": "", "alias_database": ""}) as inst:
            inst.start()
            inst.stop()
            submit_all(inst, msgids)
            maildrop = inst.queue_dir / "maildrop"
            inst.start()
            inst.wait_until(lambda: len(list(maildrop.iterdir())) < count,
                            timeout=30, what="pickup under way")
            orphans = pickups(inst)
            os.kill(inst.master_pid(), signal.SIGKILL)
            inst.start()                      # a new master and its own pickup
            inst.wait_until(lambda: not any(maildrop.iterdir()), timeout=DRAIN_SECONDS,
                            what="maildrop/ emptied")
            inst.wait_for_log(r"qmgr\[\d+\]: \w+: from=<s@example.com>, .*\(queue active\)",
                              count=count, timeout=DRAIN_SECONDS)
            time.sleep(1.0)
            log = inst.log()
            for pid in orphans:               # gone by themselves
                assert not os.path.exists(f"/proc/{pid}") or \
                    " Z " in open(f"/proc/{pid}/stat").read(), f"orphan pickup {pid} still runs"
    queued = queued_message_ids(log)
    lost = [m for m in msgids if m not in queued]
    dups = {m: q for m, q in queued.items() if len(q) > 1}
    assert not lost, f"lost: {lost[:5]}"
    assert not dups, f"queued twice: {list(dups.items())[:5]}"


def test_kill9_of_pickup_loses_nothing():
    rng = random.Random(SEED)
    msgids = [f"<pickup-k9.{SEED}.{i}@test.example>" for i in range(MESSAGES)]
    with traversable_tmp("pfy-pickup-k9-") as tmp:
        with Instance(tmp / "inst", master_cf=master_cf(),
                      main_cf={"default_transport": "retry:4.3.0 kept by the test",
                               "local_transport": "retry:4.3.0 kept by the test",
                               "alias_maps": "", "alias_database": "",
                               # A pickup killed before its first wakeup is a
                               # "bad startup" to master, which then throttles
                               # the service (60 s by default).
                               "service_throttle_time": "1s"}) as inst:
            inst.start()                      # creates the queue folders
            inst.stop()
            submit_all(inst, msgids)
            maildrop = inst.queue_dir / "maildrop"
            assert len(list(maildrop.iterdir())) == MESSAGES
            inst.start()

            kills = 0
            deadline = time.monotonic() + CHAOS_SECONDS
            while kills < MAX_KILLS and time.monotonic() < deadline:
                time.sleep(rng.uniform(0.02, 0.4))
                for pid in pickups(inst):
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass
                if not any(maildrop.iterdir()):
                    break
            # Enough kills to mean something, or the work was all done.
            assert kills >= MIN_KILLS or not any(maildrop.iterdir()), kills

            inst.wait_until(lambda: not any(maildrop.iterdir()), timeout=DRAIN_SECONDS,
                            what="maildrop/ emptied by the surviving pickups")
            inst.wait_for_log(r"qmgr\[\d+\]: \w+: from=<s@example.com>, .*\(queue active\)",
                              count=MESSAGES, timeout=DRAIN_SECONDS)
            time.sleep(1.0)                   # the last active lines
            log = inst.log()

    # Queue IDs qmgr saw (committed files only) -> their Message-IDs.
    active = set(re.findall(r"qmgr\[\d+\]: (\w+): from=<s@example.com>, .*\(queue active\)", log))
    msgid_of = dict(re.findall(r"cleanup\[\d+\]: (\w+): message-id=(<[^>]*>)", log))
    queued: dict[str, set[str]] = {}
    for qid in active:
        queued.setdefault(msgid_of.get(qid, "?"), set()).add(qid)
    lost = [m for m in msgids if m not in queued]
    dups = {m: q for m, q in queued.items() if len(q) > 1}
    print(f"pickup kill -9: seed={SEED} kills={kills} messages={MESSAGES} "
          f"lost={len(lost)} queued twice={len(dups)}")
    assert not lost, f"lost after {kills} kills of pickup: {lost[:5]}"
    assert "pickup" in log and "panic" not in "".join(
        line for line in log.splitlines() if "pickup[" in line), "pickup panicked"


# -- two pickups on one maildrop/, in one process (no instance) --------------------

class _FakeCleanup:
    """Takes a file slowly and counts what it was given, by Message-ID."""

    def __init__(self, seen: dict, lock):
        self.queue_id = "4ABC123DEF"
        self.seen, self.lock, self.msgid = seen, lock, None

    def record(self, rtype, data):
        if data.startswith(b"Message-ID: "):
            self.msgid = data[12:]

    def finish_records(self):
        time.sleep(0.005)           # long enough for the other pickup to arrive
        with self.lock:
            self.seen[self.msgid] = self.seen.get(self.msgid, 0) + 1
        return self.queue_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Ctx:
    def __init__(self, settings, gone_after=None):
        self.data = {"settings": settings}
        self.gone_after, self.calls = gone_after, 0

    def master_gone(self) -> bool:
        self.calls += 1
        return self.gone_after is not None and self.calls > self.gone_after


def _maildrop(tmp: Path, count: int) -> None:
    from pfy.cli import sendmail
    (tmp / "maildrop").mkdir()
    (tmp / "main.cf").write_text(f"queue_directory = {tmp}\n")
    for i in range(count):
        body = b"Message-ID: <m%d@x>\nSubject: s\n\nbody\n" % i
        assert sendmail.run(["-C", str(tmp), "-i", "u@example.com"], "sendmail",
                            io.BufferedReader(io.BytesIO(body)), lambda s, m: None) == 0


def _fake_pickup(monkeypatch, seen, lock):
    import functools
    from pfy.daemons import pickup
    monkeypatch.setattr(pickup, "pickup_file", functools.partial(
        pickup.pickup_file, connect=lambda *a, **k: _FakeCleanup(seen, lock),
        warn=lambda msg: None))
    return pickup, {"line_length_limit": 2048, "content_filter": "", "myhostname": "h",
                    "mail_name": "Postfix", "ipc_timeout": 5.0, "cleanup_path": "c",
                    "flags": pickup.cleanup_flags([])}


def test_two_pickups_never_take_the_same_file(tmp_path, monkeypatch):
    """An orphaned pickup and the new master's, racing through one
    maildrop/: flock and the link count give each file to one of them."""
    import threading
    count = 40
    _maildrop(tmp_path, count)
    seen: dict = {}
    lock = threading.Lock()
    pickup, settings = _fake_pickup(monkeypatch, seen, lock)
    monkeypatch.chdir(tmp_path)
    threads = [threading.Thread(target=pickup.scan_maildrop, args=(_Ctx(settings), b"W"))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any((tmp_path / "maildrop").iterdir())
    assert len(seen) == count, f"got {len(seen)} messages want {count}"
    dups = {m: n for m, n in seen.items() if n > 1}
    assert not dups, f"queued twice: {dups}"


def test_orphaned_pickup_stops_between_files(tmp_path, monkeypatch):
    import threading
    _maildrop(tmp_path, 5)
    seen: dict = {}
    pickup, settings = _fake_pickup(monkeypatch, seen, threading.Lock())
    monkeypatch.chdir(tmp_path)
    pickup.scan_maildrop(_Ctx(settings, gone_after=2), b"W")
    assert len(seen) == 2 and len(list((tmp_path / "maildrop").iterdir())) == 3
