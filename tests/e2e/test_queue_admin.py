"""Queue administration on a running instance: mailq/postqueue through the
showq service under master, postsuper and postcat on the same messages."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from instance import Instance  # noqa: E402

from pfy.queue import Queue  # noqa: E402


def hold_message(inst, sender, rcpt):
    """A message parked in hold/ (no daemon touches it), as cleanup's HOLD."""
    q = Queue(str(inst.queue_dir))
    with q.create("hold") as w:
        w.time()
        w.sender(sender)
        w.recipient(rcpt)
        w.begin_content()
        w.content_line(b"Subject: held")
        w.content_line(b"")
        w.content_line(b"body")
        w.end_content()
        qid = w.commit()
    if os.geteuid() == 0:
        st = os.stat(inst.queue_dir / "hold")
        os.chown(w.path, st.st_uid, st.st_gid)
    return qid


def test_mailq_postqueue_postsuper_postcat(tmp_path):
    with Instance(tmp_path) as inst:
        inst.start()
        p = inst.command("postqueue", "-p")
        assert p.returncode == 0, p.stderr
        assert p.stdout == b"Mail queue is empty\n"
        assert b"accessing queue directly" not in p.stderr     # showq answered

        qid = hold_message(inst, "alice@example.com", "bob@example.net")
        p = inst.command("mailq")
        assert p.returncode == 0, p.stderr
        lines = p.stdout.decode().splitlines()
        assert lines[0].startswith("-Queue ID-  --Size--")
        assert lines[1].startswith(f"{qid}!") and lines[1].endswith("alice@example.com")
        assert lines[2].strip() == "bob@example.net"
        assert lines[-1] == "-- 0 Kbytes in 1 Request."

        p = inst.command("postqueue", "-j")
        obj = json.loads(p.stdout)
        assert obj["queue_name"] == "hold" and obj["queue_id"] == qid
        assert obj["recipients"] == [{"address": "bob@example.net"}]

        p = inst.command("postcat", "-q", qid)
        assert b"sender: alice@example.com" in p.stdout and b"Subject: held" in p.stdout

        p = inst.command("postsuper", "-d", qid)
        assert p.returncode == 0, p.stderr
        assert p.stderr.decode().splitlines() == [
            f"postsuper: {qid}: removed", "postsuper: Deleted: 1 message"]
        assert inst.command("postqueue", "-p").stdout == b"Mail queue is empty\n"
        inst.wait_for_log(rf"postfix/postsuper\[\d+\]: {qid}: removed")


def test_postqueue_when_the_system_is_down(tmp_path):
    with Instance(tmp_path) as inst:
        Queue(str(inst.queue_dir)).make_dirs()
        p = inst.command("postqueue", "-p")
        # The caller owns (or is root over) the queue: direct access.
        assert p.returncode == 0, p.stderr
        assert p.stdout == b"Mail queue is empty\n"
        assert b"Mail system is down -- accessing queue directly" in p.stderr
        p = inst.command("postqueue", "-f")
        assert p.returncode == 69
        assert p.stderr == b"postqueue: fatal: Cannot flush mail queue - mail system is down\n"


def _as_nobody(inst, *args):
    """A postqueue run by an ordinary user who cannot write the queue."""
    import subprocess
    from instance import BIN_DIR, user_argv
    env = dict(os.environ, MAIL_CONFIG=str(inst.config_dir))
    return subprocess.run(user_argv("nobody", [str(BIN_DIR / "postqueue"), *args]),
                          env=env, capture_output=True, timeout=60)


def _deferred(inst):
    return sorted(e.queue_id for e in Queue(str(inst.queue_dir)).ready_files("deferred"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: postqueue run as another user")
def test_unprivileged_postqueue_flush_by_id_and_site(tmp_path):
    """postqueue -i / -s ask qmgr over public/qmgr, so a user who cannot
    write the queue flushes too; authorized_flush_users still decides."""
    import re
    tfile = tmp_path / "transport"
    tfile.write_text("fix.example retry:4.4.1 not yet\nsite.example retry:4.4.1 not yet\n")
    os.chmod(tmp_path, 0o755)
    cf = {"transport_maps": f"texthash:{tfile}", "minimal_backoff_time": "300s",
          "maximal_backoff_time": "600s", "queue_run_delay": "300s",
          "fast_flush_domains": "site.example", "alias_maps": ""}
    with Instance(tmp_path / "inst", main_cf=cf) as inst:
        inst.start()
        for rcpt in ("a@fix.example", "b@site.example"):
            p = inst.command("sendmail", "-f", "root@localhost.localdomain", rcpt,
                             input=b"Subject: flush me\n\nhello\n")
            assert p.returncode == 0, p.stderr
        inst.wait_until(lambda: len(_deferred(inst)) == 2, timeout=20, what="both deferred")
        qids = {}
        for rcpt in ("a@fix.example", "b@site.example"):
            (line,) = inst.wait_for_log(rf"\]: (\w+): to=<{re.escape(rcpt)}>.*status=deferred")
            qids[rcpt] = re.search(r"\]: (\w+): to=", line).group(1)
        tfile.write_text("fix.example discard:fixed\nsite.example discard:fixed\n")
        inst.postfix("reload")

        inst.set_main_cf(authorized_flush_users="root")
        p = _as_nobody(inst, "-i", qids["a@fix.example"])
        assert p.returncode == 77
        assert re.fullmatch(rb"postqueue: fatal: User nobody\(\d+\) is not allowed to flush "
                            rb"the mail queue\n", p.stderr), p.stderr
        inst.set_main_cf(authorized_flush_users="static:anyone")

        p = _as_nobody(inst, "-i", qids["a@fix.example"])
        assert (p.returncode, p.stderr) == (0, b"")
        inst.wait_for_log(rf"{qids['a@fix.example']}: to=<a@fix\.example>, .*status=sent "
                          r"\(fixed\)", timeout=20)
        p = _as_nobody(inst, "-s", "fix.example")          # not in fast_flush_domains
        assert p.returncode == 69
        assert p.stderr == (b"postqueue: fatal: Flush service is not configured for "
                            b'destination "fix.example"\n')
        p = _as_nobody(inst, "-s", "site.example")
        assert (p.returncode, p.stderr) == (0, b"")
        inst.wait_for_log(rf"{qids['b@site.example']}: to=<b@site\.example>, .*status=sent "
                          r"\(fixed\)", timeout=20)
        p = _as_nobody(inst, "-i", "not/an-id")
        assert p.returncode == 64 and b"Cannot flush queue ID - invalid name" in p.stderr
