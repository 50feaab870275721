"""The local submission boundary (DESIGN.md "Privileges", postdrop(1)), as
root with two throw-away users A and B:

- B cannot forge A's identity: the file B submits is B's (st_uid), whatever
  -f says, and pickup logs B's uid;
- B cannot list maildrop/, read A's queued file, or remove/rename it;
- sendmail works while the daemons are down (test_sendmail_submission.py
  shows the message is delivered after `postfix start`).

The users' side runs in a forked child that drops to the user's uid/gid
(os.setgid/os.setuid) and calls pfy's sendmail code in-process: the
interpreter lives under /root (mode 0700), which the users cannot exec, and
what is tested is what the kernel enforces after the drop.
"""

import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from instance import Instance  # noqa: E402

from pfy.cli import sendmail  # noqa: E402
from pfy.cli.postdrop import MAILDROP_READY  # noqa: E402

USERS = ("pfysec_a", "pfysec_b")


@pytest.fixture(scope="module")
def users():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates two users and drops to their uids")
    made = []
    for name in USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)
            made.append(name)
    try:
        yield [pwd.getpwnam(n) for n in USERS]
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)


def as_user(pw, fn) -> int:
    """Run fn() in a child as user pw; returns its exit status (fn's int)."""
    pid = os.fork()
    if pid == 0:
        status = 99
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            status = fn()
        except BaseException:       # noqa: BLE001 - report as a status
            status = 98
        finally:
            os._exit(status)
    _, st = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(st)


def submit(inst, argv, body):
    """sendmail in-process (for the forked child): 0 on success."""
    import io
    stdin = io.BufferedReader(io.BytesIO(body))
    return sendmail.run(["-C", str(inst.config_dir), *argv], "sendmail", stdin,
                        lambda sev, msg: sys.stderr.write(f"sendmail: {sev}: {msg}\n"))


@pytest.fixture
def stopped_instance(tmp_path, users):
    with Instance(tmp_path) as inst:
        inst.start()
        inst.stop()
        yield inst


def maildrop_files(inst):
    return sorted((inst.queue_dir / "maildrop").iterdir())


def test_layout_is_the_postdrop_one(tmp_path, users):
    with Instance(tmp_path) as inst:
        inst.start()
        st = (inst.queue_dir / "maildrop").stat()
        assert st.st_mode & 0o7777 == 0o3733, f"got {oct(st.st_mode & 0o7777)} want 0o3733"
        assert st.st_gid == pwd.getpwnam("postfix").pw_gid
        assert (inst.queue_dir / "public").stat().st_mode & 0o011 == 0o011


def test_files_belong_to_the_submitter_whatever_f_says(stopped_instance, users):
    inst = stopped_instance
    a, b = users
    assert as_user(b, lambda: submit(inst, ["-f", "pfysec_a", "root"], b"Subject: forged\n\nx\n")) == 0
    (f,) = maildrop_files(inst)
    st = f.stat()
    assert st.st_uid == b.pw_uid, "the kernel, not -f, says who submitted"
    assert st.st_gid == grp.getgrnam("postfix").gr_gid
    assert st.st_mode & 0o7777 == MAILDROP_READY


def test_another_user_cannot_list_read_or_remove_queued_mail(stopped_instance, users):
    inst = stopped_instance
    a, b = users
    assert as_user(a, lambda: submit(inst, ["root"], b"Subject: secret\n\nA's secret\n")) == 0
    (f,) = maildrop_files(inst)
    maildrop = str(inst.queue_dir / "maildrop")

    def try_list():
        try:
            os.listdir(maildrop)
            return 1
        except PermissionError:
            return 0

    def try_read():
        try:
            open(f, "rb").read()
            return 1
        except PermissionError:
            return 0

    def try_remove():
        try:
            os.unlink(f)
            return 1
        except PermissionError:
            return 0

    def try_rename():
        try:
            os.rename(f, os.path.join(maildrop, "AAAAAAAAAAAAAAAAAAAAAAAAAA"))
            return 1
        except PermissionError:
            return 0

    def try_overwrite():
        try:
            os.open(f, os.O_WRONLY | os.O_TRUNC)
            return 1
        except PermissionError:
            return 0

    for what, fn in [("list maildrop", try_list), ("read A's file", try_read),
                     ("remove A's file", try_remove), ("rename A's file", try_rename),
                     ("overwrite A's file", try_overwrite)]:
        assert as_user(b, fn) == 0, f"user B could {what}"
    assert f.exists() and b"A's secret" in f.read_bytes()


def test_pickup_takes_the_uid_from_the_file(tmp_path, users):
    a, b = users
    with Instance(tmp_path) as inst:
        inst.start()
        assert as_user(b, lambda: submit(inst, ["-f", "pfysec_a", "root"], b"Subject: x\n\ny\n")) == 0
        inst.wait_for_log(rf"pickup\[\d+\]: [0-9A-Z]+: uid={b.pw_uid} from=<pfysec_a>", timeout=70)
