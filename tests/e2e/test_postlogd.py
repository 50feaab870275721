"""postlogd (master.cf "postlog unix-dgram n - n - 1 postlogd", as Postfix
ships it): a process that cannot open maillog_file -- an ordinary user's
postlog, sendmail or postqueue when the maillog is root's -- sends its
lines to public/postlog, and postlogd appends them to the maillog.  A
datagram that is not one log line is dropped with a warning, and one
record can never become two lines."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from instance import Instance  # noqa: E402
from test_postdrop_security import as_user, users  # noqa: E402,F401 - fixture

from pfy.cli import postlog  # noqa: E402


def _wait(inst, text, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in inst.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"not in the maillog: {text!r}\n{inst.log()}")


def test_a_users_records_reach_the_root_maillog(tmp_path, users):  # noqa: F811
    user = users[0]
    with Instance(tmp_path / "inst") as inst:
        inst.start()
        os.environ["MAIL_CONFIG"] = str(inst.config_dir)
        try:
            status = as_user(user, lambda: postlog.run(["-t", "pfy-test", "hello from a user"]))
        finally:
            del os.environ["MAIL_CONFIG"]
        assert status == 0
        _wait(inst, "pfy-test[")
        line = next(ln for ln in inst.log().splitlines() if "pfy-test[" in ln)
        assert line.endswith(": hello from a user"), line
        st = inst.maillog.stat()                # the user could not have opened it
        assert st.st_uid == 0 and st.st_mode & 0o077 == 0


def test_a_record_that_is_not_a_log_line_is_dropped(tmp_path, users):  # noqa: F811
    with Instance(tmp_path / "inst") as inst:
        inst.start()
        path = str(inst.queue_dir / "public" / "postlog")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"forged without a time stamp\n", path)
            s.sendto(b"Nov 22 10:15:01 host x[1]: one\nNov 22 10:15:01 host smtpd[2]: two\n",
                     path)
        _wait(inst, "not a log line")
        log = inst.log()
        assert "forged without a time stamp" not in log
        lines = [ln for ln in log.splitlines() if "x[1]: one" in ln]
        assert len(lines) == 1 and lines[0].endswith("one?Nov 22 10:15:01 host smtpd[2]: two")
        assert not any(ln.startswith("Nov 22 10:15:01 host smtpd[2]") for ln in log.splitlines())
