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
