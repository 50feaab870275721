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
            (["-bs", "rcpt"], b"", 64, "stand-alone mode requires no recipient"),
            (["-bp", "rcpt"], b"", 64, "display queue mode requires no recipient"),
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


# -- sendmail -bs: smtpd -S on stdin/stdout ----------------------------------

BS_MAIN_CF = dict(MAIN_CF, alias_maps="", alias_database="",
                  default_transport="retry:4.3.0 held back by the test")


def smtp_reply(stream) -> bytes:
    lines = []
    while True:
        line = stream.readline()
        lines.append(line)
        if not line or line[3:4] != b"-":
            return b"".join(lines)


def bs_dialogue(argv, env) -> list[tuple[bytes, bytes]]:
    """Drive a whole SMTP dialogue over sendmail -bs's pipes, one command
    at a time as a client must (no pipelining before the greeting)."""
    import subprocess
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    got = [(b"", smtp_reply(p.stdout))]
    for cmd in (b"EHLO client.example", b"MAIL FROM:<s@example.com>",
                b"RCPT TO:<r@example.com>", b"DATA",
                b"Subject: via -bs\r\n\r\nhello over pipes\r\n.", b"QUIT"):
        p.stdin.write(cmd + b"\r\n")
        p.stdin.flush()
        got.append((cmd, smtp_reply(p.stdout)))
    p.stdin.close()
    assert p.wait(timeout=30) == 0, p.stderr.read()
    return got


def test_bs_runs_smtpd_stand_alone_over_pipes(tmp_path):
    with Instance(tmp_path, main_cf=BS_MAIN_CF) as inst:
        inst.start()
        env = dict(os.environ, MAIL_CONFIG=str(inst.config_dir))
        got = bs_dialogue([str(Path(sys.executable).parent / "sendmail"), "-bs"], env)
        replies = [r for _, r in got]
        assert replies[0].startswith(b"220 localhost.localdomain ESMTP"), replies
        assert replies[1].startswith(b"250-localhost.localdomain"), replies
        assert replies[2].startswith(b"250 2.1.0") and replies[3].startswith(b"250 2.1.5")
        assert replies[4].startswith(b"354 ")
        m = re.match(rb"250 2.0.0 Ok: queued as (\w+)", replies[5])
        assert m, replies[5]
        assert replies[6].startswith(b"221 2.0.0")
        inst.wait_for_log(r"to=<r@example.com>, .*status=deferred \(held back by the test\)",
                          timeout=40)


def test_bs_refused_for_a_user_not_on_the_list(tmp_path):
    import pwd
    me = pwd.getpwuid(os.getuid()).pw_name
    with Instance(tmp_path, main_cf=dict(BS_MAIN_CF, authorized_submit_users=f"!{me}, static:anyone")) as inst:
        p = inst.command("sendmail", "-bs", input=b"QUIT\r\n")
        err = p.stderr.decode()
        assert p.returncode == 77 and err == (f"sendmail: fatal: User {me}({os.getuid()}) "
                                              "is not allowed to submit mail\n"), err
        assert p.stdout == b"", "no SMTP greeting for a refused user"


def test_bs_mail_enters_through_maildrop_with_the_users_uid(tmp_path):
    """DESIGN "Privileges": -bs gives a user no more than postdrop does, so
    the message goes through maildrop/ and pickup stamps the real uid."""
    if os.geteuid() != 0:
        pytest.skip("needs root: submits as another user")
    import pwd
    from instance import user_argv
    nobody = pwd.getpwnam("nobody")
    with Instance(tmp_path, main_cf=BS_MAIN_CF) as inst:
        inst.start()
        env = dict(os.environ, MAIL_CONFIG=str(inst.config_dir))
        argv = user_argv("nobody", [str(Path(sys.executable).parent / "sendmail"), "-bs"])
        bs_dialogue(argv, env)
        inst.wait_for_log(rf"pickup\[\d+\]: \w+: uid={nobody.pw_uid} from=<s@example.com>",
                          timeout=20)
