"""qmgr's active queue against a real queue folder and fake delivery agents."""

import asyncio
import os
import socket
import threading

import pytest

from pfy.daemons.qmgr.active import ActiveQueue, Resolved, ResolveError
from pfy.daemons.qmgr.scheduler import Scheduler, TransportLimits
from pfy.ipc.attr import FrameParser, encode_attrs
from pfy.ipc.delivery import AgentSession, read_request, send_reply
from pfy.queue.directory import Queue
from pfy.queue.queue_file import QueueFileReader


def submit(queue, sender, rcpts, body=b"hello"):
    with queue.create("incoming") as w:
        w.time()
        w.sender(sender)
        for r in rcpts:
            w.recipient(r, orig_rcpt=r)
        w.begin_content()
        w.content_line(b"Subject: t")
        w.content_line(b"")
        w.content_line(body)
        w.end_content()
        return w.commit()


class FakeAgent:
    """A delivery agent on a unix socket; ``decide(rcpt)`` gives its DSN."""

    def __init__(self, path, queue, decide, die_on=None):
        self.path, self.queue, self.decide, self.die_on = path, queue, decide, die_on
        self.delivered = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(50)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        with conn:
            req = read_request(conn)
            entry = self.queue.entry(req.queue_name, req.queue_id)
            fd = os.open(entry.path, os.O_RDWR)
            try:
                s = AgentSession(req, fd, log_status=lambda **kw: None)
                for r in req.recipients:
                    if self.die_on and self.die_on(r.address):
                        return            # like kill -9: no reply at all
                    dsn = self.decide(r.address)
                    if dsn.startswith("2"):
                        self.delivered.append((req.queue_id, r.address))
                    s.status(r, dsn, "fake " + dsn, "fake")
                send_reply(conn, s.finish("fake"))
            finally:
                os.close(fd)

    def close(self):
        self.sock.close()


@pytest.fixture
def q(tmp_path):
    queue = Queue(str(tmp_path / "q"), fsync=False)
    queue.make_dirs()
    os.makedirs(queue.dir("private"), exist_ok=True)
    return queue


def resolver(sender, address):
    if address.startswith("tempfail"):
        raise ResolveError("address resolver failure")
    domain = address.rpartition("@")[2]
    return Resolved("local" if domain == "here" else "smtp", domain, address)


class FakeBounce:
    """The bounce/defer/trace services as qmgr sees them: each notice is
    recorded with whether the queue file was still in active/ (the real
    service quotes it from there), and the logfile goes as the real one's."""

    def __init__(self, queue, ok=True):
        self.queue, self.ok, self.calls = queue, ok, []

    async def _call(self, kind, logfile, msg, remove=True):
        path = self.queue.log_path(logfile, msg.queue_id)
        text = open(path).read() if os.path.exists(path) else None
        in_active = os.path.exists(self.queue.path(msg.queue_name, msg.queue_id))
        self.calls.append((kind, msg.queue_id, text, in_active, msg.flags))
        if self.ok and remove and text is not None:
            os.unlink(path)
        return self.ok

    async def aflush(self, msg):
        return await self._call("flush", "bounce", msg)

    async def adefer_flush(self, msg):
        return await self._call("defer_flush", "defer", msg)

    async def awarn(self, msg):
        return await self._call("warn", "defer", msg, remove=False)

    async def atrace_flush(self, msg):
        return await self._call("trace", "trace", msg)

    def kinds(self):
        return [c[0] for c in self.calls]


def run_engine(queue, everything=False, **kw):
    limits = lambda n: TransportLimits(n, recipient_limit=1 if n == "local" else 50,
                                       initial_concurrency=2, dest_concurrency_limit=4)
    async def go():
        eng = ActiveQueue(queue, Scheduler(limits), kw.pop("resolve", resolver),
                          lambda t: os.path.join(queue.dir("private"), t), **kw)
        eng.recover()
        eng.request_scan(deferred=True, all_deferred=everything)
        await asyncio.sleep(0)
        await asyncio.wait_for(eng.idle.wait(), 20)
        return eng
    return asyncio.run(go())


def files(queue, name):
    return sorted(e.queue_id for e in queue.ready_files(name))


def test_delivered_messages_are_removed(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "2.0.0")
    ids = [submit(q, "s@x", [f"u{i}@here", f"v{i}@here"]) for i in range(10)]
    run_engine(q)
    agent.close()
    assert files(q, "incoming") == files(q, "active") == files(q, "deferred") == []
    assert sorted(agent.delivered) == sorted((i, f"{p}{n}@here") for n, i in enumerate(ids) for p in "uv")


def test_deferred_recipient_keeps_message_with_reason_and_skips_done(q, tmp_path):
    agent = FakeAgent(q.dir("private") + "/local", q,
                      lambda a: "4.2.0" if a.startswith("full") else "2.0.0")
    qid = submit(q, "s@x", ["ok@here", "full@here"])
    run_engine(q)
    assert files(q, "deferred") == [qid]
    log = open(q.log_path("defer", qid)).read()
    assert "recipient=full@here" in log and "status=4.2.0" in log and "ok@here" not in log
    # the delivered recipient is marked done in the file
    with QueueFileReader(q.path("deferred", qid)) as r:
        assert [x.address for x in r.read_envelope().pending] == ["full@here"]
    # the retry ("A": all of deferred/) delivers only the deferred recipient
    agent.decide = lambda a: "2.0.0"
    agent.delivered.clear()
    run_engine(q)
    assert agent.delivered == []                    # not due yet
    run_engine(q, everything=True)
    assert agent.delivered == [(qid, "full@here")]
    assert files(q, "deferred") == [] and not os.path.exists(q.log_path("defer", qid))
    agent.close()


def test_bounce_is_recorded_then_marked_done(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "5.1.1")
    qid = submit(q, "s@x", ["nobody@here"])
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce)
    agent.close()
    assert files(q, "deferred") == [] and files(q, "active") == []
    ((kind, bqid, text, in_active, _),) = bounce.calls
    assert (kind, bqid, in_active) == ("flush", qid, True)   # flushed before removal
    assert "action=failed" in text and "status=5.1.1" in text


def test_bounce_service_down_keeps_message_then_flushes_later(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "5.1.1")
    qid = submit(q, "s@x", ["nobody@here"])
    bounce = FakeBounce(q, ok=False)
    run_engine(q, bounce=bounce)
    assert files(q, "deferred") == [qid]            # kept: the notice is owed
    with QueueFileReader(q.path("deferred", qid)) as r:
        assert r.read_envelope().pending == []      # but never delivered twice
    bounce.ok = True
    run_engine(q, everything=True, bounce=bounce)
    agent.close()
    assert bounce.kinds() == ["flush", "flush"] and files(q, "deferred") == []
    assert not os.path.exists(q.log_path("bounce", qid))


def test_corrupt_file_goes_to_corrupt_and_queue_moves_on(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "2.0.0")
    good = submit(q, "s@x", ["a@here"])
    bad = submit(q, "s@x", ["b@here"])
    path = q.path("incoming", bad)
    with open(path, "r+b") as f:
        f.truncate(30)
    run_engine(q)
    agent.close()
    assert os.listdir(q.dir("corrupt")) == [bad]
    assert agent.delivered == [(good, "a@here")]


def test_missing_agent_and_resolver_failure_defer(q):
    qid = submit(q, "s@x", ["a@elsewhere", "tempfail@here"])
    run_engine(q)
    assert files(q, "deferred") == [qid]
    log = open(q.log_path("defer", qid)).read()
    assert "mail transport unavailable" in log and "address resolver failure" in log


def test_agent_dies_mid_request_nothing_lost_nothing_twice(q):
    agent = FakeAgent(q.dir("private") + "/smtp", q, lambda a: "2.0.0",
                      die_on=lambda a: a.startswith("c"))
    qid = submit(q, "s@x", ["a@far", "b@far", "c@far", "d@far"])
    run_engine(q)
    assert files(q, "deferred") == [qid]
    first = list(agent.delivered)
    assert first == [(qid, "a@far"), (qid, "b@far")]
    agent.die_on = None
    agent.delivered.clear()
    run_engine(q, everything=True)
    agent.close()
    assert agent.delivered == [(qid, "c@far"), (qid, "d@far")]
    assert files(q, "deferred") == []


def test_active_leftovers_are_recovered_at_start(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "2.0.0")
    qid = submit(q, "s@x", ["a@here"])
    q.move(q.entry("incoming", qid), "active")      # as if qmgr was killed
    run_engine(q)
    agent.close()
    assert agent.delivered == [(qid, "a@here")] and files(q, "active") == []


def test_active_limit_still_delivers_everything(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "2.0.0")
    ids = [submit(q, "s@x", ["a@here"]) for _ in range(7)]
    run_engine(q, active_limit=2)
    agent.close()
    assert sorted(i for i, _ in agent.delivered) == sorted(ids)
