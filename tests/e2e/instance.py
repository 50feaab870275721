"""A whole pfy instance in a temporary folder, for end-to-end tests.

    from instance import Instance        # tests/e2e is on sys.path for e2e tests

    def test_something(tmp_path):
        with Instance(tmp_path, main_cf={"myhostname": "mx.example"}) as inst:
            inst.start()                         # postfix -c DIR start; waits for ready
            smtplib.SMTP("127.0.0.1", inst.smtp_port)...
            inst.wait_for_log("status=sent")     # polls the maillog_file
            inst.postfix("reload")               # any postfix command
        # leaving the block stops it (postfix stop) and kills leftovers

Layout (all under tmp_path): config/ (main.cf, master.cf), queue/, data/,
maillog. main.cf: loopback only, free ports, myhostname localhost.localdomain
unless given; everything the instance writes stays in tmp_path.
master.cf: the shipped one, with the smtp inet service moved to a free
loopback port (inst.smtp_port) and submission/smtps likewise when present;
or `master_cf=` text of your own ("{smtp_port}" is substituted).

Root: when the tests run as root the instance runs as root (daemons as
mail_owner = postfix, chrooted where master.cf says). The queue folders
are then owned by postfix, and every folder above them must stay
traversable by it. pytest's tmp_path does not: each pytest session (other
suites running at the same time included) resets /tmp/pytest-of-root to
0700, locking postfix out of a running instance at a random moment. So
as root an instance given a folder under pytest's base lives in a fresh
/tmp/pfy-inst-* folder (0755) instead, and the given folder holds symbolic
links config, queue, data and maillog to it, for tests that build paths
from tmp_path (an instance with user= stays where the test put it: such
tests hand that folder to the user). Instance() without a folder uses a
fresh traversable folder too. These
folders are removed when the test process exits (not when the instance
stops: a test may read the log afterwards).
"""

from __future__ import annotations

import os
import atexit
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN_DIR = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _shipped_master_cf() -> str:
    from pfy.server.paths import shipped_file
    with open(shipped_file("master.cf")) as f:
        return f.read()


_LINKED = ("config", "queue", "data", "maillog")


def _traversable_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pfy-inst-", dir="/tmp"))
    os.chmod(path, 0o755)
    atexit.register(shutil.rmtree, path, True)
    return path


def _under_pytest_base(path: Path) -> bool:
    return any(part.startswith("pytest-of-") for part in path.resolve().parts)


def instance_root(root=None, user: str | None = None) -> Path:
    """The folder an instance lives in (see the module docstring)."""
    if root is None:
        return _traversable_dir()
    root = Path(root)
    if os.geteuid() != 0 or user is not None or not _under_pytest_base(root):
        # An instance run by an ordinary user lives where the test put it:
        # such tests hand the folder (and everything in it) to that user.
        return root
    real = _traversable_dir()
    root.mkdir(parents=True, exist_ok=True)
    # Files a test keeps beside the instance (scripts for pipe, say) stay
    # reachable as before, at least until the next pytest session starts.
    _make_traversable(root)
    for name in _LINKED:
        link = root / name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(real / name)
    return real


class Instance:
    def __init__(self, root=None, main_cf: dict[str, str] | None = None,
                 master_cf: str | None = None, user: str | None = None):
        self.root = instance_root(root, user)
        self.config_dir = self.root / "config"
        self.queue_dir = self.root / "queue"
        self.data_dir = self.root / "data"
        self.maillog = self.root / "maillog"
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.smtps_port = free_port()
        self.user = user
        self.config_dir.mkdir(parents=True, exist_ok=True)
        _make_traversable(self.root)
        params = {
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "myhostname": "localhost.localdomain",
            "mynetworks": "127.0.0.0/8",
            "max_idle": "30s",
            # Never this machine's /etc/aliases: a test that wants aliases
            # sets alias_maps (a missing table defers mail, as in Postfix).
            "alias_maps": "",
        }
        params.update(main_cf or {})
        self.write_main_cf(params)
        self.write_master_cf(master_cf)

    # -- files ---------------------------------------------------------------

    def write_main_cf(self, params: dict[str, str]) -> None:
        self.params = dict(params)
        text = "".join(f"{k} = {v}\n" for k, v in params.items())
        (self.config_dir / "main.cf").write_text(text)

    def set_main_cf(self, **params: str) -> None:
        """Change main.cf parameters (call reload() for a running instance)."""
        merged = dict(self.params)
        merged.update(params)
        self.write_main_cf(merged)

    def write_master_cf(self, text: str | None = None) -> None:
        if text is None:
            text = self._ported(_shipped_master_cf())
        else:
            text = text.replace("{smtp_port}", str(self.smtp_port))
        (self.config_dir / "master.cf").write_text(text)

    def _ported(self, text: str) -> str:
        ports = {"smtp": self.smtp_port, "submission": self.submission_port,
                 "smtps": self.smtps_port, "submissions": self.smtps_port}

        def repl(m: re.Match) -> str:
            return f"127.0.0.1:{ports[m.group(1)]}{m.group(2)}"
        return re.sub(r"^(smtp|submission|smtps|submissions)(\s+inet\b)", repl, text, flags=re.M)

    # -- commands --------------------------------------------------------------

    def _cmd(self, name: str, *args: str) -> list[str]:
        argv = [str(BIN_DIR / name), *args]
        if self.user:
            argv = user_argv(self.user, argv)
        return argv

    def postfix(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `postfix -c CONFIG args...`; output captured (text)."""
        p = subprocess.run(self._cmd("postfix", "-c", str(self.config_dir), *args),
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)} exit {p.returncode}: "
                                 f"{p.stderr.strip()}\n--- maillog:\n{self.log()}")
        return p

    def command(self, name: str, *args: str, input: bytes | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run another of our commands (sendmail, postqueue...) with this
        instance's config (MAIL_CONFIG)."""
        env = dict(os.environ, MAIL_CONFIG=str(self.config_dir))
        return subprocess.run(self._cmd(name, *args), input=input, env=env,
                              capture_output=True, timeout=timeout)

    def start(self) -> None:
        self.postfix("start")

    def stop(self) -> None:
        if self.master_pid() is not None:
            self.postfix("stop", check=False)

    def reload(self) -> None:
        self.postfix("reload")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def children(self) -> list[tuple[int, str]]:
        """(pid, command line) of master's children, from /proc."""
        master = self.master_pid()
        out = []
        if master is None:
            return out
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == master:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                    out.append((int(entry), cmd.replace(b"\0", b" ").decode().strip()))
            except (OSError, ValueError, IndexError):
                continue
        return out

    # -- log -----------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> list[str]:
        """Lines matching regex `pattern`, once at least `count` exist."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [ln for ln in self.log().splitlines() if rx.search(ln)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} log line(s) matching {pattern!r} in "
                                     f"{timeout}s; maillog:\n{self.log()}")
            time.sleep(0.05)

    def wait_until(self, predicate, timeout: float = 15.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; maillog:\n{self.log()}")
            time.sleep(0.05)

    # -- context -----------------------------------------------------------------

    def __enter__(self) -> "Instance":
        return self

    def __exit__(self, *exc) -> None:
        pid = self.master_pid()
        children = self.children()
        try:
            self.stop()
        finally:
            if pid is not None:
                for child, _ in children:
                    _kill(child)
                _kill(pid)


_HIDDEN_PREFIX = "/root/"


def user_argv(user: str, argv: list[str]) -> list[str]:
    """argv run as `user` (we are root). If the Python we run under lives
    below a folder that user cannot enter (pyenv in /root, mode 0700), the
    command runs in a private mount namespace where /root is a tmpfs with only
    that Python's tree bind-mounted back: the machine is left unchanged."""
    real = os.path.realpath(sys.executable)
    probe = subprocess.run(["runuser", "-u", user, "--", real, "-c", "pass"],
                           capture_output=True)
    if probe.returncode == 0:
        return ["runuser", "-u", user, "--", *argv]
    top = real.split("/")[:3]          # e.g. /root/.pyenv
    keep = "/".join(top)
    script = (f'set -e; d=$(mktemp -d); mount --bind {keep} "$d"; '
              f'mount -t tmpfs -o mode=755 tmpfs /{top[1]}; mkdir -p {keep}; '
              f'mount --bind "$d" {keep}; umount "$d"; rmdir "$d"; exec runuser -u {user} -- "$@"')
    return ["unshare", "-m", "sh", "-c", script, "sh", *argv]


def _make_traversable(path: Path) -> None:
    """Let mail_owner (or the instance's user) reach the instance folder:
    pytest's /tmp/pytest-of-root is 0700. Adds only o+x on the parents."""
    os.chmod(path, 0o755)
    for parent in path.parents:
        if str(parent) in ("/", "/tmp"):
            break
        try:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, (mode & 0o7777) | 0o011)
        except OSError:
            break


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
