"""virtual(8)'s delivery logic on real queue files and real mailboxes.

As an ordinary user (or as root delivering to the mapped uid): lookups,
Maildir vs mbox, catch-all, extensions, the loop check, configuration
errors, and every way a table result could leave virtual_mailbox_base.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from delivery_setup import (corrupt_content, enqueue, make_cfg, make_queue,  # noqa: E402
                            make_traversable, over_socketpair, request_for)

from pfy.daemons.virtual import PathRefused, VirtualAgent, mailbox_location  # noqa: E402
from pfy.mailbox import delivered_to_set  # noqa: E402
from pfy.queue.queue_file import QueueFileReader  # noqa: E402

UID = os.geteuid() if os.geteuid() else 4242
GID = os.getegid() if os.geteuid() else 4242


@pytest.fixture
def world(tmp_path):
    queue = make_queue(tmp_path)
    base = tmp_path / "vmail"
    base.mkdir()
    make_traversable(tmp_path)
    if os.geteuid() == 0:
        os.chown(base, UID, GID)
    (tmp_path / "vmailbox").write_text(
        "alice@v.example  v.example/alice/\n"
        "bob@v.example    v.example/bob\n"
        "@catch.example   catch/all/\n"
        "evil1@v.example  ../escape/\n"
        "evil2@v.example  v.example/../../escape\n"
        "evil3@v.example  /etc/evil\n"
        "link@v.example   linked/box/\n"
        "lowuid@v.example v.example/low/\n")
    (tmp_path / "uids").write_text("lowuid@v.example 5\n")
    cfg = make_cfg(tmp_path, virtual_mailbox_base=str(base),
                   virtual_mailbox_maps=f"texthash:{tmp_path}/vmailbox",
                   virtual_uid_maps=f"texthash:{tmp_path}/uids, static:{UID}",
                   virtual_gid_maps=f"static:{GID}", virtual_minimum_uid="100",
                   recipient_delimiter="+", queue_directory=str(tmp_path / "q"))
    return queue, base, cfg, tmp_path


def submit(queue, rcpts, headers=(b"Subject: t",), body=(b"From the start", b"hello")):
    qid, envl = enqueue(queue, rcpts, sender="sender@remote.example", headers=headers,
                        body=body)
    return request_for(qid, envl, nexthop="v.example")


def deliver(world, rcpts, **kw):
    queue, base, cfg, tmp = world
    logged = []
    agent = VirtualAgent(cfg, str(tmp / "q"))
    req = submit(queue, rcpts, **kw)
    import pfy.ipc.delivery as d
    orig = d.AgentSession.__init__

    def init(self, *a, **k):
        k["log_status"] = lambda **kw: logged.append(kw)
        orig(self, *a, **k)
    d.AgentSession.__init__ = init
    try:
        reply = agent.handle(req)
    finally:
        d.AgentSession.__init__ = orig
    return {r.address: r for r in reply.results}, logged


def maildir_messages(path: Path) -> list[bytes]:
    new = path / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


# -- the path rules ----------------------------------------------------------------

@pytest.mark.parametrize("base, result, path, maildir", [
    ("/vm", "d/u/", "/vm/d/u/", True),
    ("/vm", "d/u", "/vm/d/u", False),
    ("/vm", "d//u/", "/vm/d/u/", True),
    ("", "/var/mail/x", "/var/mail/x", False),
])
def test_mailbox_location(base, result, path, maildir):
    loc = mailbox_location(base, result)
    assert (loc.path, loc.maildir) == (path, maildir)


@pytest.mark.parametrize("result", ["../x/", "d/../../x", "d/./x", "/abs", "", "a\0b", "/"])
def test_path_escape_refused(result):
    with pytest.raises(PathRefused):
        mailbox_location("/vm", result)


def test_delivered_to_set():
    lines = [b"Subject: x", b"Delivered-To: A@B.example", b"delivered-to:  c@d", b"",
             b"Delivered-To: body@ignored"]
    assert delivered_to_set(lines) == {"a@b.example", "c@d"}


# -- deliveries ---------------------------------------------------------------------

def test_maildir_and_mbox(world):
    queue, base, cfg, tmp = world
    res, logged = deliver(world, ["alice@v.example", "Bob+Tag@V.example"])
    assert res["alice@v.example"].status == "sent", res
    assert res["Bob+Tag@V.example"].status == "sent", res
    assert [l["reason"] for l in logged] == ["delivered to maildir", "delivered to mailbox"]
    assert {l["relay"] for l in logged} == {"virtual"}
    (msg,) = maildir_messages(base / "v.example" / "alice")
    assert msg.startswith(b"Return-Path: <sender@remote.example>\n"
                          b"X-Original-To: alice@v.example\nDelivered-To: alice@v.example\n")
    mbox = (base / "v.example" / "bob").read_bytes()
    assert mbox.startswith(b"From sender@remote.example  ")
    assert b"Delivered-To: Bob+Tag@V.example\n" in mbox and b"\n>From the start\n" in mbox
    for p in (base / "v.example" / "alice", base / "v.example" / "bob"):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (UID, GID)
    # the sent recipients are marked done in the queue file
    with QueueFileReader(str(tmp / "q" / "active" / logged[0]["queue_id"])) as r:
        assert r.read_envelope().pending == []


def test_catch_all_and_unknown(world):
    queue, base, cfg, tmp = world
    res, logged = deliver(world, ["anyone@catch.example", "nobody@v.example"])
    assert res["anyone@catch.example"].status == "sent"
    assert len(maildir_messages(base / "catch" / "all")) == 1
    r = res["nobody@v.example"]
    assert (r.status, r.dsn, r.reason) == ("bounced", "5.1.1", 'unknown user: "nobody@v.example"')


def test_delivered_to_loop_bounces(world):
    res, _ = deliver(world, ["alice@v.example"], headers=(b"Delivered-To: Alice@v.example",))
    r = res["alice@v.example"]
    assert (r.status, r.dsn) == ("bounced", "5.4.6"), r
    assert "mail forwarding loop for alice@v.example" in r.reason


@pytest.mark.parametrize("rcpt", ["evil1@v.example", "evil2@v.example", "evil3@v.example"])
def test_escaping_table_results_are_deferred(world, rcpt, capsys):
    queue, base, cfg, tmp = world
    res, _ = deliver(world, [rcpt])
    r = res[rcpt]
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.5", "mail system configuration error")
    assert "refused" in capsys.readouterr().err
    assert not (tmp / "escape").exists() and not (base.parent / "escape").exists()


def test_symlink_in_path_is_refused(world, capsys):
    queue, base, cfg, tmp = world
    outside = tmp / "outside"
    outside.mkdir()
    (base / "linked").symlink_to(outside)
    res, _ = deliver(world, ["link@v.example"])
    r = res["link@v.example"]
    assert (r.status, r.dsn) == ("deferred", "4.3.5"), r
    assert "symbolic link" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


def test_symlinked_mbox_file_is_refused(world):
    queue, base, cfg, tmp = world
    target = tmp / "target"
    target.write_bytes(b"")
    (base / "v.example").mkdir()
    (base / "v.example" / "bob").symlink_to(target)
    res, _ = deliver(world, ["bob@v.example"])
    assert res["bob@v.example"].status == "deferred"
    assert target.read_bytes() == b""


def test_uid_below_minimum_is_a_config_error(world, capsys):
    res, _ = deliver(world, ["lowuid@v.example"])
    r = res["lowuid@v.example"]
    assert (r.status, r.dsn) == ("deferred", "4.3.5")
    assert "bad uid 5" in capsys.readouterr().err


def test_mailbox_limit_keeps_mail_queued(world, tmp_path):
    queue, base, cfg, tmp = world
    cfg = cfg.with_overrides({"virtual_mailbox_limit": "100", "message_size_limit": "0"})
    agent = VirtualAgent(cfg, str(tmp / "q"))
    reply = agent.handle(submit(queue, ["bob@v.example"], body=[b"x" * 200]))
    (r,) = reply.results
    assert (r.status, r.dsn) == ("deferred", "4.2.2"), r
    assert (base / "v.example" / "bob").stat().st_size == 0     # truncated back


def test_unprivileged_defers_other_uids(world, tmp_path):
    queue, base, cfg, tmp = world
    agent = VirtualAgent(cfg.with_overrides({"virtual_uid_maps": "static:54321"}),
                         str(tmp / "q"), euid=UID if UID else 4242)
    if os.geteuid() == 0:
        agent.euid = 4242
    (r,) = agent.handle(submit(queue, ["alice@v.example"])).results
    assert r.status == "deferred" and "without root privileges" in r.reason


def test_over_the_delivery_protocol(world):
    """The agent answers qmgr's request on a socket as the daemon does."""
    queue, base, cfg, tmp = world
    agent = VirtualAgent(cfg, str(tmp / "q"))
    reply = over_socketpair(agent, submit(queue, ["alice@v.example"]))
    assert [r.status for r in reply.results] == ["sent"]


def test_queue_file_trouble_defers(world, capsys):
    # Content that cannot be read defers every recipient before any is
    # tried; a queue file that cannot be opened, too.
    queue, base, cfg, tmp = world
    agent = VirtualAgent(cfg, str(tmp / "q"))
    req = submit(queue, ["alice@v.example", "bob@v.example"])
    corrupt_content(queue, req)
    reply = agent.handle(req)
    assert [(r.status, r.dsn, r.reason) for r in reply.results] == [
        ("deferred", "4.3.0", "queue file format error")] * 2
    assert f"{req.queue_id}: " in capsys.readouterr().err
    os.unlink(queue.path("active", req.queue_id))
    reply = agent.handle(req)
    assert [(r.status, r.dsn, r.reason) for r in reply.results] == [
        ("deferred", "4.3.0", "cannot open queue file: No such file or directory")] * 2
    assert list(base.iterdir()) == []
