"""local's delivery logic fed a delivery request over a socketpair."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from delivery_setup import (corrupt_content, enqueue, make_cfg, make_queue,  # noqa: E402
                            over_socketpair, request_for)

from pfy.daemons.local.agent import LocalAgent, User, split_extension  # noqa: E402
from pfy.queue.queue_file import QueueFileReader  # noqa: E402


@pytest.fixture
def env(tmp_path):
    queue = make_queue(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    me = User("alice", os.geteuid(), os.getegid(), str(home), "/bin/sh")
    return queue, me, tmp_path


def submit(queue, rcpts, body=(b"From the start", b"hello")):
    return enqueue(queue, rcpts, orig_rcpt=str.upper, body=body)


def agent_for(cfg, queue, me, **kw):
    users = {"alice": me}
    return LocalAgent(cfg, queue.root, getpw=users.get, **kw)


def test_maildir_delivery_marks_done(env):
    queue, me, tmp = env
    cfg = make_cfg(tmp, home_mailbox="Maildir/")
    qid, envl = submit(queue, ["alice@host"])
    reply = over_socketpair(agent_for(cfg, queue, me), request_for(qid, envl))
    (res,) = reply.results
    assert (res.status, res.dsn, res.reason, res.marked) == ("sent", "2.0.0", "delivered to maildir", True)
    (name,) = os.listdir(os.path.join(me.home, "Maildir", "new"))
    data = open(os.path.join(me.home, "Maildir", "new", name), "rb").read()
    assert data.startswith(b"Return-Path: <bob@remote.example>\nX-Original-To: ALICE@HOST\n"
                           b"Delivered-To: alice@host\nSubject: t\n\nFrom the start\n")
    with QueueFileReader(queue.path("active", qid)) as r:
        assert r.read_envelope().pending == []


def test_spool_mbox_with_extension(env):
    queue, me, tmp = env
    spool = tmp / "spool"
    spool.mkdir(mode=0o1777)
    cfg = make_cfg(tmp, mail_spool_directory=str(spool), recipient_delimiter="+")
    qid, envl = submit(queue, ["Alice+lists@host"])
    reply = over_socketpair(agent_for(cfg, queue, me), request_for(qid, envl))
    assert reply.results[0].reason == "delivered to mailbox"
    data = (spool / "alice").read_bytes()
    assert data.startswith(b"From bob@remote.example  ")
    assert b"\n>From the start\n" in data and data.endswith(b"hello\n\n")


def test_unknown_user_bounces_511(env):
    queue, me, tmp = env
    cfg = make_cfg(tmp, home_mailbox="Maildir/")
    qid, envl = submit(queue, ["nobody-here@host"])
    (res,) = over_socketpair(agent_for(cfg, queue, me), request_for(qid, envl)).results
    assert (res.status, res.dsn, res.reason) == ("bounced", "5.1.1", 'unknown user: "nobody-here"')
    cfg2 = make_cfg(tmp, home_mailbox="Maildir/", soft_bounce="yes")
    (res,) = over_socketpair(agent_for(cfg2, queue, me), request_for(qid, envl)).results
    assert (res.status, res.dsn) == ("deferred", "4.1.1")


def test_size_limit_defers_422(env):
    # issue 3 (not Postfix, which bounces 5.2.2): the mail stays queued.
    queue, me, tmp = env
    cfg = make_cfg(tmp, home_mailbox="mbox", mailbox_size_limit="100",
                   message_size_limit="50")
    qid, envl = submit(queue, ["alice@host"], body=[b"x" * 200])
    (res,) = over_socketpair(agent_for(cfg, queue, me), request_for(qid, envl)).results
    assert (res.status, res.dsn) == ("deferred", "4.2.2")
    assert res.reason.startswith(f"cannot update mailbox {me.home}/mbox for user alice. ")


def test_other_user_is_deferred_when_unprivileged(env):
    queue, me, tmp = env
    cfg = make_cfg(tmp, home_mailbox="Maildir/")
    other = User("carol", me.uid + 1, me.gid, me.home, "/bin/sh")
    agent = LocalAgent(cfg, queue.root, getpw={"carol": other}.get, euid=me.uid or 1000)
    if me.uid == 0:
        agent = LocalAgent(cfg, queue.root, getpw={"carol": User("carol", 4242, 4242, me.home, "/bin/sh")}.get,
                           euid=1000)
    qid, envl = submit(queue, ["carol@host"])
    (res,) = over_socketpair(agent, request_for(qid, envl)).results
    assert res.status == "deferred" and "without root privileges" in res.reason


def test_mailbox_command_argv_env_and_exit_codes(env):
    queue, me, tmp = env
    out = tmp / "cmd.out"
    script = tmp / "deliver.sh"
    script.write_text(f'#!/bin/sh\necho "$RECIPIENT $EXTENSION $SENDER" > {out}\ncat >> {out}\nexit ${{1:-0}}\n')
    script.chmod(0o755)
    cfg = make_cfg(tmp, mailbox_command=f"{script}", recipient_delimiter="+")
    qid, envl = submit(queue, ["alice+x@host"])
    (res,) = over_socketpair(agent_for(cfg, queue, me), request_for(qid, envl)).results
    assert (res.status, res.reason) == ("sent", f"delivered to command: {script}")
    text = out.read_text()
    assert text.startswith("alice+x@host x bob@remote.example\nFrom bob@remote.example  ")
    cfg = make_cfg(tmp, mailbox_command=f"{script} 75")
    qid, envl = submit(queue, ["alice@host"])
    (res,) = over_socketpair(agent_for(cfg, queue, me), request_for(qid, envl)).results
    assert (res.status, res.dsn) == ("deferred", "4.3.0")
    assert res.reason == f'Command died with status 75: "{script} 75"'


def test_mailbox_transport_passes_the_recipient(env):
    queue, me, tmp = env
    cfg = make_cfg(tmp, mailbox_transport="lmtp:inet:x")
    seen = []
    def fake_pass(session, rcpt, spec):
        seen.append((rcpt.address, spec))
        session.defer(rcpt, "4.4.1", "lmtp down", "lmtp")
    qid, envl = submit(queue, ["alice@host"])
    agent = LocalAgent(cfg, queue.root, getpw={}.get, pass_to=fake_pass)
    (res,) = over_socketpair(agent, request_for(qid, envl)).results
    assert seen == [("alice@host", "lmtp:inet:x")] and res.status == "deferred"


@pytest.mark.parametrize("local,delim,want", [
    ("alice+x", "+", ("alice", "x")), ("alice", "+", ("alice", "")),
    ("a-b+c", "+-", ("a", "b+c")), ("+x", "+", ("+x", "")), ("alice+x", "", ("alice+x", "")),
])
def test_split_extension(local, delim, want):
    assert split_extension(local, delim) == want


def test_forwarding_loop_bounces_546(env):
    # luser_relay pointing at an address the message was already delivered
    # to: the Delivered-To header stops the loop (local(8), 5.4.6).
    queue, me, tmp = env
    cfg = make_cfg(tmp, home_mailbox="Maildir/", luser_relay="ghost@host")
    qid, envl = enqueue(queue, ["ghost@host"], orig_rcpt=lambda r: "",
                        headers=(b"Delivered-To: Ghost@host", b"Subject: t"), body=(b"x",))
    (res,) = over_socketpair(agent_for(cfg, queue, me), request_for(qid, envl)).results
    assert (res.status, res.dsn) == ("bounced", "5.4.6")
    assert res.reason == "mail forwarding loop for ghost@host"


def test_queue_file_trouble_defers(env):
    # Content that cannot be read defers the recipient (the loop check is
    # the first to read it); a queue file that cannot be opened, all.
    queue, me, tmp = env
    cfg = make_cfg(tmp, home_mailbox="Maildir/")
    qid, envl = submit(queue, ["alice@host"])
    req = request_for(qid, envl)
    corrupt_content(queue, req)
    (res,) = over_socketpair(agent_for(cfg, queue, me), req).results
    assert (res.status, res.dsn, res.reason) == ("deferred", "4.3.0", "mail system error")
    os.unlink(queue.path("active", qid))
    (res,) = over_socketpair(agent_for(cfg, queue, me), req).results
    assert (res.status, res.dsn, res.reason) == (
        "deferred", "4.3.0", "cannot open queue file: No such file or directory")


def test_expand_local_variables():
    from pfy.daemons.local.agent import expand_local
    assert expand_local("$user+lost@x", "bob+a@h", "bob", "a", "+") == "bob+lost@x"
    assert expand_local("admin${extension?+}${extension}@h", "bob+a@h", "bob", "a", "+") == "admin+a@h"
    assert expand_local("admin${extension?+}${extension}@h", "bob@h", "bob", "", "+") == "admin@h"
    assert expand_local("${domain:none}/$local", "bob@h", "bob", "", "+") == "/bob"
