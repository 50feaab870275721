"""lmtp(8) end to end into Debian's dovecot-lmtpd and a Maildir.

sendmail -> ... -> qmgr -> lmtp -> Dovecot LMTP (started here with its own
config in the temp folder, foreground, stopped after) -> Maildir.  Needs the
Debian packages dovecot-core and dovecot-lmtpd (tools/test installs them).

Dovecot's folder is not under pytest's tmp_path: Dovecot stores the mail as
the userdb's uid (nobody), which needs +x on every folder above the
Maildir, and every pytest session resets /tmp/pytest-of-root to 0700 --
Dovecot then answered "451 4.2.0 Internal error occurred" after the dot
(its log: "stat(.../Maildir/tmp) failed: Permission denied (euid=65534
(nobody) ... missing +x perm: /tmp/pytest-of-root").  Whether the test
passed depended on which pytest session had touched that folder last.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from instance import Instance, free_port
from localusers import traversable_tmp

DOVECOT = "/usr/sbin/dovecot"


def _dovecot(tmp: Path, listen: str) -> subprocess.Popen:
    if not (os.path.exists(DOVECOT) and os.path.exists("/usr/lib/dovecot/lmtp")):
        pytest.skip("dovecot-lmtpd is not installed (Debian packages dovecot-core dovecot-lmtpd)")
    for d in ("run", "state", "mail"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    os.chmod(tmp / "mail", 0o777)
    conf = tmp / "dovecot.conf"
    conf.write_text(f"""
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
mail_debug = yes
protocols = lmtp
ssl = no
listen = 127.0.0.1
mail_location = maildir:{tmp}/mail/%n/Maildir
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={tmp}/mail/%n
}}
service lmtp {{
  {listen}
}}
service anvil {{
  chroot =
}}
""")
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    return proc


def _maildir_files(tmp: Path, user: str) -> list[Path]:
    new = tmp / "mail" / user / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


@pytest.fixture
def dtmp():
    with traversable_tmp(prefix="pfy-dovecot-") as path:
        yield path


def test_virtual_transport_lmtp_inet_into_maildir(tmp_path, dtmp):
    port = free_port()
    proc = _dovecot(dtmp, f"inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}")
    try:
        with Instance(tmp_path / "pfy", main_cf={
                "myhostname": "pfy.example", "virtual_mailbox_domains": "virt.example",
                "virtual_transport": f"lmtp:inet:127.0.0.1:{port}"}) as inst:
            inst.start()
            p = inst.command("sendmail", "-f", "a@pfy.example", "alice@virt.example", "bob@virt.example",
                             input=b"Subject: lmtp\n\nhello dovecot\n")
            assert p.returncode == 0, p.stderr
            try:
                lines = inst.wait_for_log(r"postfix/lmtp\[\d+\]: .*status=sent", count=2,
                                          timeout=20)
            except AssertionError as e:
                log = dtmp / "dovecot.log"
                raise AssertionError(f"{e}\nDovecot's log:\n"
                                     f"{log.read_text() if log.exists() else '(none)'}") from None
            assert all(f"relay=127.0.0.1[127.0.0.1]:{port}" in ln for ln in lines)
            assert any("to=<alice@virt.example>" in ln for ln in lines)
            # Dovecot answers per recipient after the dot (RFC 2033 4.2).
            assert all("250 2.0.0 <" in ln for ln in lines)
            deadline = time.monotonic() + 5
            while not (_maildir_files(dtmp, "alice") and _maildir_files(dtmp, "bob")):
                assert time.monotonic() < deadline, (dtmp / "dovecot.log").read_text()
                time.sleep(0.1)
            assert b"hello dovecot" in _maildir_files(dtmp, "alice")[0].read_bytes()
    finally:
        proc.terminate()
        proc.wait(10)


def test_lmtp_unknown_user_refused_per_recipient(tmp_path):
    """An LMTP server that rejects RCPT: bounced with the reply quoted."""
    from test_smtp_delivery import sink
    with sink("-L", "-f", "rcpt") as port, Instance(tmp_path, main_cf={
            "myhostname": "pfy.example", "virtual_mailbox_domains": "virt.example",
            "virtual_transport": f"lmtp:[127.0.0.1]:{port}"}) as inst:
        inst.start()
        p = inst.command("sendmail", "-f", "a@pfy.example", "x@virt.example", input=b"Subject: x\n\nx\n")
        assert p.returncode == 0
        line = inst.wait_for_log(r"postfix/lmtp\[\d+\]: .*status=bounced")[0]
        assert "(in reply to RCPT TO command)" in line
