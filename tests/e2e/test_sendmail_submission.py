"""sendmail through the real processes: mail accepted while the daemons are
down, picked up after `postfix start`; options that reach the queue (-t,
-f, -N); exit codes and messages of the command itself."""

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from instance import Instance  # noqa: E402

from pfy.cli.postdrop import MAILDROP_READY  # noqa: E402

# Keep delivery inside the test: nothing may land in this machine's mailboxes.
MAIN_CF = {"local_transport": "error:local delivery disabled by the test",
           "default_transport": "error:remote delivery disabled by the test"}


def fix_layout(inst):
    """See test_postdrop_security.postdrop_layout (XXX until layout.py)."""
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam("postfix")
        os.chown(inst.queue_dir / "maildrop", pw.pw_uid, pw.pw_gid)
        os.chmod(inst.queue_dir / "maildrop", 0o3733)
        os.chmod(inst.queue_dir / "public", 0o711)


def test_accepted_while_down_then_picked_up_after_start(tmp_path):
    with Instance(tmp_path, main_cf=MAIN_CF) as inst:
        inst.start()
        inst.stop()
        fix_layout(inst)
        p = inst.command("sendmail", "-f", "bob@example.com", "alice@example.com",
                         input=b"Subject: while down\n\nhello\n")
        assert p.returncode == 0, p.stderr
        files = list((inst.queue_dir / "maildrop").iterdir())
        assert len(files) == 1 and files[0].stat().st_mode & 0o777 == MAILDROP_READY
        inst.start()
        fix_layout(inst)
        line = inst.wait_for_log(r"pickup\[\d+\]: \w+: uid=\d+ from=<bob@example.com>", timeout=70)[0]
        qid = re.search(r": (\w+): uid=", line).group(1)
        inst.wait_for_log(rf"qmgr\[\d+\]: {qid}: from=<bob@example.com>", timeout=30)
        inst.wait_until(lambda: not list((inst.queue_dir / "maildrop").iterdir()),
                        what="maildrop emptied after cleanup acknowledged")


def test_extract_recipients_with_t(tmp_path):
    with Instance(tmp_path, main_cf=MAIN_CF) as inst:
        inst.start()
        fix_layout(inst)
        msg = (b"From: someone@example.com\r\nTo: A <a@example.com>, b@example.com\r\n"
               b"Cc: c@example.com\r\nBcc: hidden@example.com\r\nSubject: t\r\n\r\nbody\r\n")
        p = inst.command("sendmail", "-t", "-i", "-f", "s@example.com", "extra@example.com",
                         input=msg)
        assert p.returncode == 0, p.stderr
        line = inst.wait_for_log(r"qmgr\[\d+\]: \w+: from=<s@example.com>", timeout=70)[0]
        assert "nrcpt=5" in line, line


def test_exit_codes_and_messages(tmp_path):
    with Instance(tmp_path, main_cf=MAIN_CF) as inst:
        inst.start()
        inst.stop()
        fix_layout(inst)
        cases = [
            ([], b"Subject: x\n\n", 64, "Recipient addresses must be specified"),
            (["-t"], b"Subject: x\n\n", 64, "No recipient addresses found in message header"),
            (["-Z"], b"", 64, "invalid option -- 'Z'"),
            (["-B", "9BIT", "a"], b"", 64, "-B option needs 8BITMIME or 7BIT"),
            (["-bs"], b"", 64, "unsupported: -bs"),
        ]
        for argv, data, want_rc, want_msg in cases:
            p = inst.command("sendmail", *argv, input=data)
            err = p.stderr.decode()
            assert p.returncode == want_rc and want_msg in err, \
                f"sendmail {argv}: got {p.returncode} {err!r} want {want_rc} {want_msg!r}"
            assert "Traceback" not in err
        assert not list((inst.queue_dir / "maildrop").iterdir()), "a refused message left a file"


def test_missing_queue_directory_is_one_line(tmp_path, pfy):
    import subprocess
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/nowhere\n")
    p = subprocess.run([pfy("sendmail"), "-C", str(tmp_path), "a"], input=b"x\n",
                       capture_output=True)
    err = p.stderr.decode()
    assert p.returncode == 69 and err.count("\n") == 1 and "sendmail: fatal:" in err, err
