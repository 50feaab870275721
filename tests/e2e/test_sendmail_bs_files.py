"""sendmail -bs with standard input and output redirected to regular files
(`sendmail -bs < commands > transcript`): smtpd -S must read the script,
write the whole transcript and exit, and the message must be queued."""

import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from instance import Instance  # noqa: E402

# Delivery stays inside the test (see test_sendmail_submission.py).  A
# script sends every command at once: the client is the script, so Postfix
# 3.9's pipelining check (our default) is off here.
MAIN_CF = {"local_transport": "error:local delivery disabled by the test",
           "default_transport": "retry:4.3.0 held back by the test",
           "alias_maps": "", "alias_database": "",
           "smtpd_forbid_unauth_pipelining": "no"}

SCRIPT = (b"EHLO client.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n"
          b"DATA\r\nSubject: via -bs and files\r\n\r\nhello from a file\r\n.\r\nQUIT\r\n")


def test_bs_with_files_for_stdin_and_stdout(tmp_path):
    with Instance(tmp_path, main_cf=MAIN_CF) as inst:
        inst.start()
        (tmp_path / "commands").write_bytes(SCRIPT)
        env = dict(os.environ, MAIL_CONFIG=str(inst.config_dir))
        with open(tmp_path / "commands", "rb") as fin, open(tmp_path / "transcript", "wb") as fout:
            p = subprocess.run([str(Path(sys.executable).parent / "sendmail"), "-bs"],
                               stdin=fin, stdout=fout, stderr=subprocess.PIPE, env=env,
                               timeout=60)
        assert p.returncode == 0, p.stderr
        out = (tmp_path / "transcript").read_bytes()
        assert out.startswith(b"220 localhost.localdomain ESMTP"), out
        m = re.search(rb"\r\n250 2.0.0 Ok: queued as (\w+)\r\n221 2.0.0 Bye\r\n$", out)
        assert m, out
        for want in (b"\r\n250 2.1.0 Ok\r\n", b"\r\n250 2.1.5 Ok\r\n", b"\r\n354 "):
            assert want in out, f"got {out!r} want {want!r}"
        inst.wait_for_log(r"to=<r@example.com>, .*status=deferred \(held back by the test\)",
                          timeout=40)


def test_bs_with_stdout_closed_keeps_the_dialogue_out_of_the_maillog(tmp_path):
    """Postfix's sendmail gives a closed fd 0-2 /dev/null first: otherwise
    the maillog, opened next, would become stdout and receive the SMTP
    dialogue.  The message is still queued."""
    with Instance(tmp_path, main_cf=MAIN_CF) as inst:
        inst.start()
        (tmp_path / "commands").write_bytes(SCRIPT)
        env = dict(os.environ, MAIL_CONFIG=str(inst.config_dir))
        with open(tmp_path / "commands", "rb") as fin:
            p = subprocess.run([str(Path(sys.executable).parent / "sendmail"), "-bs"],
                               stdin=fin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=env, timeout=60,
                               preexec_fn=lambda: os.close(1))
        assert p.returncode == 0, p.stderr
        inst.wait_for_log(r"to=<r@example.com>, .*status=deferred \(held back by the test\)",
                          timeout=40)
        log = inst.log()
        assert "220 " not in log and "354 " not in log and "Bye" not in log, log
