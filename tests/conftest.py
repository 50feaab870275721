"""Shared test helpers.

Our commands are found next to the Python that runs the tests (the virtualenv
or the editable install), never by bare name: Debian's Postfix has commands
with the same names in /usr/sbin, which tests call by full path.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

BIN_DIR = Path(sys.executable).parent
POSTFIX_SBIN = Path("/usr/sbin")


def pfy_bin(name: str) -> str:
    """Full path of one of our installed commands."""
    path = BIN_DIR / name
    if not path.exists():
        found = shutil.which(name, path=str(BIN_DIR))
        if found is None:
            pytest.fail(f"pfy command {name!r} is not installed in {BIN_DIR}")
        return found
    return str(path)


def postfix_bin(name: str) -> str:
    """Full path of one of Debian's Postfix commands; skips if absent."""
    path = POSTFIX_SBIN / name
    if not path.exists():
        pytest.skip(f"Debian's postfix is not installed ({path} missing); .ci/run installs it")
    return str(path)


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, privilege drop or delivery as another user)")


@pytest.fixture(scope="session", autouse=True)
def _traversable_basetemp(tmp_path_factory):
    """Let unprivileged daemons reach their instance folders.

    pytest makes /tmp/pytest-of-USER and its run folder mode 0700. A root
    instance's daemons run as mail_owner (and Dovecot as its own user), so
    they could not traverse into tmp_path: give search (x) permission, not
    read, on those two folders. Each test folder below keeps its mode.
    """
    base = tmp_path_factory.getbasetemp()
    for folder in (base.parent, base):
        try:
            os.chmod(folder, os.stat(folder).st_mode | 0o011)
        except OSError:
            pass


@pytest.fixture(autouse=True)
def _isolate_process_state():
    """Undo what an in-process daemon start leaves behind: a working
    directory inside a deleted temp folder (later shells fail getcwd) and
    the "pfy" logger routed to a daemon's log (caplog then sees nothing)."""
    import logging
    cwd = os.getcwd()
    log = logging.getLogger("pfy")
    saved = (list(log.handlers), log.propagate, log.level)
    yield
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    log.handlers[:], log.propagate, log.level = saved[0], saved[1], saved[2]


@pytest.fixture
def pfy():
    return pfy_bin


@pytest.fixture
def postfix():
    return postfix_bin
