"""Throw-away local users and mailbox readers for the local delivery tests.

    with local_users(tmp_path, 2) as (alice, bob):   # pwd entries, homes in tmp_path
        ...
    messages_in_maildir(path) / messages_in_mbox(path) -> [bytes]

Users are created with useradd (root only) with their home folders inside the
test's temporary folder and removed with userdel afterwards, so the machine's
/home and mail spool are never touched.  Names carry the test process's pid so
parallel runs do not collide.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

__all__ = ["traversable_tmp", "local_users", "messages_in_maildir", "messages_in_mbox", "message_ids"]


@contextlib.contextmanager
def traversable_tmp(prefix: str = "pfy-e2e-"):
    """A temporary folder mail_owner and the test users can reach.

    Not pytest's tmp_path: every pytest session (other tests running at the
    same time included) resets /tmp/pytest-of-root to mode 0700, which
    locks mail_owner and the recipients out of an instance under it at a
    random moment."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def local_users(tmp_path: Path, count: int, prefix: str = "pfyl"):
    if os.geteuid() != 0:
        pytest.skip("needs root: creates test users with useradd")
    homes = Path(tmp_path) / "home"
    homes.mkdir(exist_ok=True)
    os.chmod(homes, 0o755)
    made: list[str] = []
    try:
        for i in range(count):
            name = f"{prefix}{os.getpid() % 100000}x{i}"
            home = homes / name
            subprocess.run(["userdel", name], capture_output=True)   # debris of a killed run
            subprocess.run(["useradd", "-M", "-U", "-d", str(home), "-s", "/usr/sbin/nologin",
                            name], check=True, capture_output=True)
            made.append(name)
            pw = pwd.getpwnam(name)
            home.mkdir()
            os.chown(home, pw.pw_uid, pw.pw_gid)
            os.chmod(home, 0o755)
        yield [pwd.getpwnam(n) for n in made]
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)


def messages_in_maildir(path: Path) -> list[bytes]:
    new = Path(path) / "new"
    if not new.is_dir():
        return []
    return [p.read_bytes() for p in sorted(new.iterdir())]


def messages_in_mbox(path: Path) -> list[bytes]:
    """Split an mbox at its "From " lines (a message starts at the file's
    start or after an empty line; quoted ones are ">From ")."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out: list[list[bytes]] = []
    prev_blank = True
    for line in data.splitlines(keepends=True):
        if prev_blank and line.startswith(b"From "):
            out.append([])
        if out:
            out[-1].append(line)
        prev_blank = line == b"\n"
    return [b"".join(m) for m in out]


def message_ids(messages: list[bytes]) -> list[str]:
    """The Message-ID of each message (header section only)."""
    ids = []
    for m in messages:
        head = m.split(b"\n\n", 1)[0]
        for line in head.split(b"\n"):
            if line.lower().startswith(b"message-id:"):
                ids.append(line.split(b":", 1)[1].strip().decode())
                break
    return ids
