"""The privilege model (DESIGN.md "Privileges"): started by root, daemons run
as mail_owner with no supplementary groups and, where master.cf says so,
chrooted into queue_directory; started by an ordinary user, everything runs
as that user without chroot, and master says so in the log."""

import os
import pwd
import shutil
import socket
import subprocess
import textwrap

import pytest


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, privilege drop, or becoming another user)")

from instance import Instance, free_port

# Replies with its credentials, its root, and what opening a file outside
# the queue directory did (the path comes from the client).
WHOAMI = """
    import os
    from pfy.server import single
    def handler(ctx, sock):
        path = sock.makefile("rb").readline().strip().decode()
        try:
            open(path).read()
            opened = "opened"
        except OSError as exc:
            opened = type(exc).__name__
        groups = ",".join(map(str, os.getgroups())) or "-"
        sock.sendall(f"{os.getuid()} {os.getgid()} {groups} {ctx.chrooted} "
                     f"{os.path.exists('/maildrop')} {opened}\\n".encode())
    single.serve(handler)
"""


def ask(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(path.encode() + b"\n")
        return s.makefile("rb").readline().decode().split()


@pytest.fixture
def whoami(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    (d / "whoami").write_text("#!/usr/bin/env python3\n" + textwrap.dedent(WHOAMI))
    os.chmod(d, 0o755)
    secret = tmp_path / "outside.txt"
    secret.write_text("outside the jail\n")
    secret.chmod(0o644)
    return d / "whoami", secret


def test_root_daemons_run_as_mail_owner_and_chroot_jails(tmp_path, whoami):
    needs_root()
    cmd, secret = whoami
    owner = pwd.getpwnam("postfix")
    plain, jailed, privileged = free_port(), free_port(), free_port()
    master_cf = textwrap.dedent(f"""\
        127.0.0.1:{plain}      inet n - n - 1 {cmd}
        127.0.0.1:{jailed}     inet n - y - 1 {cmd}
        127.0.0.1:{privileged} inet n n n - 1 {cmd}
    """)
    with Instance(tmp_path / "inst", master_cf=master_cf) as inst:
        inst.start()
        uid, gid, groups, chrooted, sees_queue, opened = ask(plain, str(secret))
        assert (int(uid), int(gid), groups) == (owner.pw_uid, owner.pw_gid, "-")
        assert chrooted == "False" and opened == "opened"
        uid, gid, groups, chrooted, sees_queue, opened = ask(jailed, str(secret))
        assert (int(uid), int(gid), groups) == (owner.pw_uid, owner.pw_gid, "-")
        # inside the jail "/" is queue_directory, and the file is unreachable
        assert chrooted == "True" and sees_queue == "True"
        assert opened == "FileNotFoundError", f"got {opened} want FileNotFoundError"
        uid, *_ = ask(privileged, str(secret))
        assert uid == "0"          # unpriv "n": stays root (local, pipe, virtual)
        assert os.stat(inst.queue_dir / "incoming").st_uid == owner.pw_uid
        # maildrop is 3733, not Postfix's 1730 group postdrop: see postdrop(1)
        assert oct(os.stat(inst.queue_dir / "maildrop").st_mode & 0o7777) == "0o3733"


def test_missing_mail_owner_is_a_clear_error(tmp_path, whoami):
    needs_root()
    with Instance(tmp_path / "inst", main_cf={"mail_owner": "no-such-user-pfy"},
                  master_cf="") as inst:
        r = inst.postfix("start", check=False)
        assert r.returncode == 1
        assert "parameter mail_owner: unknown user name value: no-such-user-pfy" in r.stderr
        assert "main.cf" in r.stderr and "Traceback" not in r.stderr


def test_ordinary_user_runs_a_whole_instance(tmp_path, whoami):
    needs_root()          # to become the ordinary user; skipped otherwise
    if shutil.which("runuser") is None or shutil.which("unshare") is None:
        pytest.skip("runuser/unshare not available")
    cmd, secret = whoami
    user = pwd.getpwnam("nobody")
    port = free_port()
    root = tmp_path / "inst"
    inst = Instance(root, master_cf=f"127.0.0.1:{port} inet n - y - 1 {cmd}\n", user="nobody")
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, user.pw_uid, user.pw_gid)
        for f in filenames:
            os.chown(os.path.join(dirpath, f), user.pw_uid, user.pw_gid)
    with inst:
        inst.start()
        uid, gid, groups, chrooted, _, opened = ask(port, str(secret))
        assert int(uid) == user.pw_uid and chrooted == "False" and opened == "opened"
        inst.wait_for_log(r"postfix/master\[\d+\]: not running as root: all daemons run as "
                          rf"user nobody \(uid {user.pw_uid}\), without chroot")
        master = inst.master_pid()
        assert os.stat(f"/proc/{master}").st_uid == user.pw_uid
        assert inst.postfix("status").returncode == 0
        inst.postfix("stop")
        assert inst.postfix("status", check=False).returncode == 1


def test_root_start_copies_etc_files_into_the_jail(tmp_path, whoami):
    """As Debian's configure-instance.sh before Postfix starts: a chrooted
    daemon finds /etc/hosts, /etc/services... (native host lookups, the
    time zone) inside queue_directory/etc, identical to the system's."""
    needs_root()
    cmd, _ = whoami
    jailed = free_port()
    master_cf = f"127.0.0.1:{jailed} inet n - y - 1 {cmd}\n"
    with Instance(tmp_path / "inst", master_cf=master_cf) as inst:
        inst.start()
        *_, chrooted_flag, _sees, opened = ask(jailed, "/etc/hosts")
        assert chrooted_flag == "True" and opened == "opened"
        for rel in ("etc/hosts", "etc/services", "etc/nsswitch.conf"):
            src = os.path.join("/", rel)
            if os.path.exists(src):
                copy = inst.queue_dir / rel
                assert copy.read_bytes() == open(src, "rb").read(), rel
                assert copy.stat().st_mode & 0o777 == 0o644 and copy.stat().st_uid == 0


def test_no_jail_no_copies(tmp_path, whoami):
    """Without a chrooted service nothing is copied (an ordinary user's
    instance never chroots, and root's without chroot needs none)."""
    needs_root()
    cmd, _ = whoami
    master_cf = f"127.0.0.1:{free_port()} inet n - n - 1 {cmd}\n"
    with Instance(tmp_path / "inst", master_cf=master_cf) as inst:
        inst.start()
        assert not (inst.queue_dir / "etc").exists()
