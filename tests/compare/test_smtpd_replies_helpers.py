"""A private Debian Postfix instance for side-by-side smtpd tests.

Not a test module (it defines no tests); it lives here, under the name
pattern the smtpd comparison files share, so that tests/compare and
tests/e2e/test_open_relay.py can start Debian's Postfix the same way:

    with PostfixInstance(tmp_path, {"mydestination": "mx.example"}) as pf:
        pf.start()
        smtplib.SMTP("127.0.0.1", pf.smtp_port) ...
        pf.log()                      # its maillog_file

Everything stays in the temporary folder: config_directory, queue_directory,
data_directory, maillog_file (written by postlogd: this machine has no
syslog). It listens on 127.0.0.1 only, smtpd on a free port, nothing
chrooted (a jail would need copies of /etc files), and it is always
stopped on leaving the with-block, even when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

POSTFIX_SBIN = Path("/usr/sbin")
POSTFIX_MASTER_CF = Path("/etc/postfix/master.cf")

__all__ = ["PostfixInstance", "postfix_available", "free_port", "normalize_reply"]


def postfix_available() -> str | None:
    """None when Debian's Postfix can be run here, else why not."""
    if not (POSTFIX_SBIN / "postfix").exists() or not POSTFIX_MASTER_CF.exists():
        return "Debian's postfix is not installed"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its master runs as root)"
    try:
        import pwd
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def normalize_reply(text: str, *hostnames: str) -> str:
    """A reply line with the host names of either side replaced by HOST,
    so that "mx.example" and "localhost.localdomain" compare equal."""
    for h in hostnames:
        if h:
            text = text.replace(h, "HOST")
    return re.sub(r"queued as [0-9A-Za-z]+", "queued as QID", text)


class PostfixInstance:
    def __init__(self, root, main_cf: dict[str, str] | None = None,
                 master_extra: str = "", smtpd_args: str = ""):
        self.root = Path(root)
        self.config = self.root / "pfconfig"
        self.queue = self.root / "pfqueue"
        self.data = self.root / "pfdata"
        self.maillog = self.root / "pfmaillog"
        self.smtp_port = free_port()
        for d in (self.config, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        shutil.chown(self.data, "postfix", "postfix")
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue), "data_directory": str(self.data),
            "maillog_file": str(self.maillog), "maillog_file_prefixes": str(self.root),
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "myhostname": "localhost.localdomain", "mydomain": "localdomain",
            "alias_maps": "", "alias_database": "", "biff": "no",
            "shlib_directory": "/usr/lib/postfix", "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix", "manpage_directory": "/usr/share/man",
            "setgid_group": "postdrop", "mail_owner": "postfix",
            # Nothing may leave this machine from a test.
            "default_transport": "error:no remote delivery in tests",
            "relay_transport": "error:no remote delivery in tests",
        }
        params.update(main_cf or {})
        self.params = params
        (self.config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
        lines = []
        for line in POSTFIX_MASTER_CF.read_text().splitlines():
            f = line.split()
            if f and not line[0].isspace() and not line.startswith("#") and len(f) >= 8:
                if f[0] == "smtp" and f[1] == "inet":
                    f[0] = f"127.0.0.1:{self.smtp_port}"
                    if smtpd_args:
                        f.append(smtpd_args)
                elif f[1] == "inet":
                    continue                     # no other listener
                f[4] = "n"
                line = " ".join(f)
            lines.append(line)
        if not any(ln.startswith("postlog") for ln in lines):
            lines.append("postlog unix-dgram n - n - 1 postlogd")
        lines.append(master_extra)
        (self.config / "master.cf").write_text("\n".join(lines) + "\n")

    def __enter__(self) -> "PostfixInstance":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([str(POSTFIX_SBIN / "postfix"), "-c", str(self.config), *args],
                           capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {p.stderr.strip()}")
        return p

    def start(self, timeout: float = 30) -> None:
        self.postfix("start")
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.smtp_port), timeout=2):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not listen on {self.smtp_port}: {self.log()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.postfix("stop", check=False)
        # postfix stop returns before every child has gone; leave nothing behind.
        pid_file = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, 0)
            except (OSError, ValueError, IndexError):
                break
            time.sleep(0.05)

    def master_pid(self) -> int:
        return int((self.queue / "pid" / "master.pid").read_text().split()[0])

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.maillog.read_text(errors="replace")
        return ""

    def wait_for_log(self, pattern: str, timeout: float = 10) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log(), re.M)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line /{pattern}/ in {self.maillog}:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def queued(self) -> list[str]:
        """Queue files anywhere in the queue (incoming, active, deferred...)."""
        out = []
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            d = self.queue / sub
            if d.exists():
                out += [str(p) for p in d.rglob("*") if p.is_file()]
        return out
