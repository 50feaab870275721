"""Issue 7 part 6: a real user's setup with Dovecot as the mailbox store.

Debian's dovecot (dovecot-core, dovecot-imapd, dovecot-lmtpd) is started by
the test in the foreground with its own configuration in the temporary
folder: loopback listeners on free ports, passwd-file users, Maildirs in
the temporary folder.  pfy hands the mail over

  - through pipe(8) and dovecot-lda (master.cf "dovecot" service, the
    virtual_transport of the domain), run as the mail owner user=, and
  - through the lmtp client to Dovecot's LMTP listener,

and the test reads each message back over IMAP with imaplib.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from instance import Instance, free_port
from localusers import local_users

DOVECOT = "/usr/sbin/dovecot"
LDA = "/usr/lib/dovecot/dovecot-lda"
PASSWORD = "s3cret-test"


def _need_dovecot() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: starts Dovecot and delivers as the mail user")
    for path in (DOVECOT, LDA, "/usr/lib/dovecot/imap", "/usr/lib/dovecot/lmtp"):
        if not os.path.exists(path):
            pytest.skip(f"{path} missing: tools/test installs dovecot-core, "
                        f"dovecot-imapd and dovecot-lmtpd")


def _traversable(path: Path) -> None:
    os.chmod(path, 0o755)
    for parent in path.parents:
        if str(parent) in ("/", "/tmp"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, (mode & 0o7777) | 0o011)


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dovecot exited {proc.returncode}:\n"
                                 f"{log.read_text() if log.exists() else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"dovecot does not listen on {port}")


@contextlib.contextmanager
def dovecot(tmp: Path, vmail):
    """A private Dovecot: IMAP and LMTP on loopback; mail owned by vmail."""
    _need_dovecot()
    d = tmp / "dovecot"
    for sub in ("run", "state"):
        (d / sub).mkdir(parents=True)
    mail = tmp / "mail"
    mail.mkdir()
    os.chown(mail, vmail.pw_uid, vmail.pw_gid)
    log = d / "dovecot.log"
    lda_log = d / "lda.log"
    lda_log.touch()
    os.chown(lda_log, vmail.pw_uid, vmail.pw_gid)
    imap_port, lmtp_port = free_port(), free_port()
    users = d / "users"
    users.write_text(
        f"alice@d.example:{{PLAIN}}{PASSWORD}:{vmail.pw_uid}:{vmail.pw_gid}::"
        f"{mail}/d.example/alice::\n"
        f"bob@d.example:{{PLAIN}}{PASSWORD}:{vmail.pw_uid}:{vmail.pw_gid}::"
        f"{mail}/d.example/bob::\n")
    users.chmod(0o644)
    conf = d / "dovecot.conf"
    conf.write_text(textwrap.dedent(f"""\
        base_dir = {d}/run
        state_dir = {d}/state
        log_path = {log}
        instance_name = pfy-test-{os.getpid()}
        protocols = imap lmtp
        listen = 127.0.0.1
        ssl = no
        disable_plaintext_auth = no
        auth_mechanisms = plain
        mail_location = maildir:~/Maildir
        first_valid_uid = 1
        passdb {{
          driver = passwd-file
          args = scheme=PLAIN username_format=%u {users}
        }}
        userdb {{
          driver = passwd-file
          args = username_format=%u {users}
        }}
        service imap-login {{
          inet_listener imap {{
            address = 127.0.0.1
            port = {imap_port}
          }}
          inet_listener imaps {{
            port = 0
          }}
        }}
        service lmtp {{
          inet_listener lmtp {{
            address = 127.0.0.1
            port = {lmtp_port}
          }}
          unix_listener lmtp {{
            mode = 0600
          }}
        }}
        service auth {{
          unix_listener auth-userdb {{
            mode = 0600
            user = {vmail.pw_name}
          }}
        }}
        service stats {{
          unix_listener stats-reader {{
            mode = 0600
          }}
          unix_listener stats-writer {{
            mode = 0666
          }}
        }}
        protocol lda {{
          log_path = {lda_log}
          info_log_path = {lda_log}
        }}
        """))
    conf.chmod(0o644)
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(imap_port, proc, log)
        yield {"conf": str(conf), "imap_port": imap_port, "lmtp_port": lmtp_port,
               "log": log, "lda_log": lda_log}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def imap_messages(port: int, user: str, want: int, timeout: float = 20) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        with imaplib.IMAP4("127.0.0.1", port) as m:
            m.login(user, PASSWORD)
            typ, data = m.select("INBOX")
            assert typ == "OK", data
            typ, data = m.search(None, "ALL")
            nums = data[0].split()
            if len(nums) >= want or time.monotonic() > deadline:
                out = []
                for n in nums:
                    typ, parts = m.fetch(n, "(RFC822)")
                    out.append(parts[0][1])
                return out
        time.sleep(0.3)


def sendmail(inst: Instance, *args: str, body: bytes) -> None:
    p = inst.command("sendmail", *args, input=body)
    assert p.returncode == 0, p.stderr.decode()


def test_pipe_to_dovecot_lda_then_imap(tmp_path):
    _need_dovecot()
    _traversable(tmp_path)
    with local_users(tmp_path, 1, prefix="pfyd") as (vmail,):
        with dovecot(tmp_path, vmail) as dc:
            with Instance(tmp_path / "inst", main_cf={
                    "virtual_mailbox_domains": "d.example",
                    "virtual_transport": "dovecot",
                    "recipient_delimiter": "+",          # ${user} drops "+news"
                    "dovecot_destination_recipient_limit": "1"}) as inst:
                with open(inst.config_dir / "master.cf", "a") as f:
                    f.write(textwrap.dedent(f"""
                        dovecot   unix  -       n       n       -       -       pipe
                          flags=DRhu user={vmail.pw_name}:{vmail.pw_name}
                          argv={LDA} -c {dc['conf']} -f ${{sender}} -d ${{user}}@${{nexthop}}
                    """))
                inst.start()
                sendmail(inst, "-f", "sender@remote.example", "Alice+news@d.example",
                         body=b"Subject: via lda\n\nhello through dovecot-lda\n")
                inst.wait_for_log(r"postfix/pipe\[\d+\]: \w+: to=<Alice\+news@d\.example>, "
                                  r"relay=dovecot, .*dsn=2\.0\.0, status=sent \(delivered via "
                                  r"dovecot service\)", timeout=40)
                # An unknown mailbox: dovecot-lda exits 67 (EX_NOUSER): a bounce.
                sendmail(inst, "-f", "sender@remote.example", "carol@d.example",
                         body=b"Subject: nobody\n\nx\n")
                inst.wait_for_log(r"to=<carol@d\.example>, relay=dovecot, .*dsn=5\.1\.1, "
                                  r"status=bounced \(user unknown", timeout=40)
                (msg,) = imap_messages(dc["imap_port"], "alice@d.example", 1)
                assert b"Subject: via lda" in msg
                assert b"hello through dovecot-lda" in msg
                assert b"Delivered-To: Alice+news@d.example" in msg
                assert b"Return-Path: <sender@remote.example>" in msg


def test_lmtp_to_dovecot_then_imap(tmp_path):
    _need_dovecot()
    _traversable(tmp_path)
    with local_users(tmp_path, 1, prefix="pfyd") as (vmail,):
        with dovecot(tmp_path, vmail) as dc:
            with Instance(tmp_path / "inst", main_cf={
                    "virtual_mailbox_domains": "d.example",
                    "virtual_transport": f"lmtp:inet:127.0.0.1:{dc['lmtp_port']}"}) as inst:
                inst.start()
                sendmail(inst, "-f", "sender@remote.example", "bob@d.example",
                         body=b"Subject: via lmtp\n\nhello through LMTP\n")
                inst.wait_for_log(r"postfix/lmtp\[\d+\]: \w+: to=<bob@d\.example>, "
                                  r"relay=.*status=sent", timeout=40)
                (msg,) = imap_messages(dc["imap_port"], "bob@d.example", 1)
                assert b"Subject: via lmtp" in msg and b"hello through LMTP" in msg
