"""cleanup on its multi skeleton, with trivial-rewrite, writing real queue files."""

import os
import textwrap

import pytest

from pfy.daemons.cleanup.core import FLAG_MASK_EXTERNAL
from pfy.ipc.cleanup_client import CleanupClient, CleanupRejected
from pfy.queue import Queue
from pfy.server.testing import start_daemon, unix_listener


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "private").mkdir()
    (tmp_path / "public").mkdir()
    (tmp_path / "virtual").write_text(
        "list@example.com alice@example.com, bob@other.org\n"
        "loop1@example.com loop2@example.com\nloop2@example.com loop1@example.com\n")
    (tmp_path / "header_checks").write_text(
        "/^Subject:.*spam/ REJECT\n/^X-Drop:/ IGNORE\n/^Subject:.*hold/ HOLD\n")
    (tmp_path / "body_checks").write_text("/^forbidden/ REJECT 5.7.9 no thanks\n")
    (tmp_path / "main.cf").write_text(textwrap.dedent(f"""\
        queue_directory = {tmp_path}
        myhostname = host.example.com
        mydomain = example.com
        myorigin = example.com
        mydestination = $myhostname, $mydomain, localhost
        inet_interfaces = 127.0.0.1
        virtual_alias_maps = texthash:{tmp_path}/virtual
        header_checks = regexp:{tmp_path}/header_checks
        body_checks = regexp:{tmp_path}/body_checks
        masquerade_domains = example.com
        undisclosed_recipients_header = To: undisclosed-recipients:;
        maillog_file = {tmp_path}/maillog
        """))
    Queue(os.fspath(tmp_path)).make_dirs()
    rsock, _ = unix_listener(tmp_path / "private" / "rewrite")
    csock, cpath = unix_listener(tmp_path / "public" / "cleanup")
    procs = [start_daemon("trivial-rewrite", config_dir=tmp_path, listen=[rsock], args=["-t", "unix"]),
             start_daemon("cleanup", config_dir=tmp_path, listen=[csock], args=["-t", "unix"])]
    rsock.close()
    csock.close()
    yield tmp_path, os.fspath(cpath)
    for p in reversed(procs):       # cleanup holds a connection to trivial-rewrite
        p.master_exit()
        p.wait(10)


def submit(path, sender, rcpts, lines, full_name=""):
    with CleanupClient.open(path, FLAG_MASK_EXTERNAL, timeout=20) as c:
        c.envelope(sender, rcpts, full_name=full_name, attrs={"rewrite_context": "local"})
        for line in lines:
            c.line(line)
        return c.finish()


def read(root, queue_id, queue="incoming"):
    q = Queue(os.fspath(root))
    with q.open(q.entry(queue, queue_id)) as r:
        env = r.read_envelope()
        return env, [x.decode() for x in r.content_lines()]


def test_headers_added_and_addresses_rewritten(instance):
    root, path = instance
    qid = submit(path, "joe", ["list", "carol@sub.example.com"],
                 [b"Subject: hi", b"Cc: friend", b"", b"body"], full_name="Joe User")
    env, lines = read(root, qid)
    assert env.sender == "joe@example.com"
    rcpts = [r.address for r in env.recipients]
    # masquerade_classes has no envelope_recipient by default (postconf(5))
    assert rcpts == ["alice@example.com", "bob@other.org", "carol@sub.example.com"]
    assert env.recipients[0].orig_rcpt == "list"
    assert "Cc: friend@example.com" in lines
    assert "From: Joe User <joe@example.com>" in lines
    assert any(l.startswith("Message-Id: <") and f".{qid}@host.example.com>" in l for l in lines)
    assert any(l.startswith("Date: ") for l in lines)
    assert lines[-2:] == ["", "body"]
    log = (root / "maillog").read_text()
    assert f"{qid}: message-id=<" in log


def test_missing_empty_line_after_headers_is_inserted(instance):
    # `echo hi | sendmail user`: "hi" ends the (empty) header block; Debian's
    # Postfix delivers the added headers, an empty line, then "hi".
    root, path = instance
    qid = submit(path, "joe", ["carol@example.com"], [b"hi"])
    _, lines = read(root, qid)
    assert lines[-2:] == ["", "hi"], lines
    assert all(":" in ln for ln in lines[:-2])
    qid = submit(path, "joe", ["carol@example.com"], [b"X-A: b", b"hi", b"there"])
    _, lines = read(root, qid)
    assert lines[-3:] == ["", "hi", "there"] and "X-A: b" in lines
    qid = submit(path, "joe", ["carol@example.com"], [b"X-A: b", b"", b"hi"])
    _, lines = read(root, qid)
    assert lines.count("") == 1


def test_undisclosed_recipients_and_loop_safe_virtual(instance):
    root, path = instance
    qid = submit(path, "joe@example.com", ["loop1@example.com"], [b"Subject: x", b"", b"b"])
    env, lines = read(root, qid)
    assert "To: undisclosed-recipients:;" in lines
    assert [r.address for r in env.recipients] == ["loop1@example.com"]


def test_header_and_body_checks(instance):
    root, path = instance
    with pytest.raises(CleanupRejected) as err:
        submit(path, "joe", ["bob@other.org"], [b"Subject: buy spam now", b"", b"x"])
    assert err.value.permanent and err.value.reason == "5.7.1 message content rejected"
    with pytest.raises(CleanupRejected) as err:
        submit(path, "joe", ["bob@other.org"], [b"Subject: ok", b"", b"forbidden words"])
    assert err.value.reason == "5.7.9 no thanks"
    log = (root / "maillog").read_text()
    assert "reject: header Subject: buy spam now from local; from=<joe@example.com> " \
           "to=<bob@other.org>: 5.7.1 message content rejected" in log
    qid = submit(path, "joe", ["bob@other.org"], [b"X-Drop: yes", b"Subject: please hold", b"", b"x"])
    env, lines = read(root, qid, "hold")
    assert not any(l.startswith("X-Drop") for l in lines)
    assert not os.path.exists(Queue(os.fspath(root)).path("incoming", qid))


def test_big_message_streams_and_size_limit(instance):
    root, path = instance
    line = b"x" * 5000                       # long lines travel as L+N records
    qid = submit(path, "joe", ["bob@other.org"], [b"Subject: big", b""] + [line] * 200)
    env, lines = read(root, qid)
    assert lines[-1] == "x" * 5000 and len(lines) > 200
    with pytest.raises(CleanupRejected) as err:
        submit(path, "joe", ["bob@other.org"], [b"Subject: huge", b""] + [line] * 2100)
    assert err.value.reason.startswith("5.3.4")
