"""qmgr's retries, expiry, delay warnings, DSN hooks, trace-only requests,
content filter and redirect routing, and per-site/per-ID flushes: the
active queue against a real queue folder, fake agents and a fake bounce
service (tests/proc/test_qmgr_engine.py has the fakes)."""

import asyncio
import os
import time

import pytest

from pfy.daemons.qmgr.active import ActiveQueue, RetryPolicy, filter_route
from pfy.daemons.qmgr.scheduler import Scheduler, TransportLimits
from pfy.dsn.logfile import NOTIFY_FAILURE, NOTIFY_SUCCESS, read_records
from pfy.ipc.delivery import DEL_REQ_FLAG_RECORD, DEL_REQ_FLAG_USR_VRFY
from pfy.ipc.trigger import parse_qmgr_request, qmgr_flush_id, qmgr_flush_site
from pfy.queue.queue_file import QueueFileReader
from pfy.queue.record import REC_FILT, REC_RDR

from tests.proc.test_qmgr_engine import FakeAgent, FakeBounce, files, q, resolver, run_engine  # noqa: F401


def submit(queue, sender="s@x", rcpts=("a@here",), *, notify=0, warn=0, attrs=None,
           filt="", redirect="", arrival=None):
    with queue.create("incoming") as w:
        w.time(arrival)
        w.sender(sender)
        for k, v in (attrs or {}).items():
            w.attr(k, v)
        if warn:
            w.warn_time(int(warn))
        for r in rcpts:
            w.recipient(r, orig_rcpt=r, dsn_notify=notify)
        w.begin_content()
        w.content_line(b"Subject: t")
        w.content_line(b"")
        w.content_line(b"body")
        w.end_content()
        if filt:
            w.write_record(REC_FILT, filt.encode())
        if redirect:
            w.write_record(REC_RDR, redirect.encode())
        return w.commit()


def mtime(queue, name, qid):
    return os.stat(queue.path(name, qid)).st_mtime


# -- backoff ------------------------------------------------------------------

@pytest.mark.parametrize("age, want", [
    (0, 300), (100, 300), (1000, 1000), (3000, 3000), (100000, 4000)])
def test_backoff_doubles_between_minimal_and_maximal(age, want):
    p = RetryPolicy(300, 4000)
    now = 1_000_000.0
    got = p.next_retry(now, now - age) - now
    assert got == want, f"age {age}: got {got} want {want}"


def test_expiry_uses_bounce_queue_lifetime_for_null_sender():
    p = RetryPolicy(maximal_queue_lifetime=100, bounce_queue_lifetime=10)
    assert not p.expired(1050, 1000, "a@x") and p.expired(1100, 1000, "a@x")
    assert p.expired(1010, 1000, "") and not p.expired(1009, 1000, "")


def test_deferred_message_waits_for_its_retry_time(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "4.2.0")
    qid = submit(q, arrival=time.time() - 1000)
    run_engine(q, bounce=FakeBounce(q), retry=RetryPolicy(300, 4000))
    assert files(q, "deferred") == [qid]
    # queued 1000 s ago: the next attempt in about 1000 s (between 300 and 4000)
    assert 990 < mtime(q, "deferred", qid) - time.time() < 1010
    agent.delivered.clear()
    agent.decide = lambda a: "2.0.0"
    run_engine(q, bounce=FakeBounce(q))            # "D": not due, untouched
    assert files(q, "deferred") == [qid] and agent.delivered == []
    now = time.time()
    os.utime(q.path("deferred", qid), (now - 1, now - 1))     # due now
    run_engine(q, bounce=FakeBounce(q))
    agent.close()
    assert files(q, "deferred") == [] and agent.delivered == [(qid, "a@here")]


# -- expiry and delay warnings ------------------------------------------------

def test_expired_message_is_returned_and_removed(q, capfd):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "4.4.1")
    qid = submit(q, rcpts=["a@here", "b@here"], arrival=time.time() - 3600)
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce, retry=RetryPolicy(300, 4000, 1800, 1800))
    agent.close()
    assert f"{qid}: from=<s@x>, status=expired, returned to sender" in capfd.readouterr().err
    ((kind, _, text, in_active, _),) = bounce.calls
    assert kind == "defer_flush" and in_active
    assert not os.path.exists(q.log_path("defer", qid))   # the service took it
    assert "recipient=a@here" in text and "recipient=b@here" in text and "action=delayed" in text
    assert files(q, "deferred") == [] and files(q, "active") == []


def test_expiry_notice_failure_keeps_message(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "4.4.1")
    qid = submit(q, arrival=time.time() - 3600)
    run_engine(q, bounce=FakeBounce(q, ok=False), retry=RetryPolicy(300, 4000, 60, 60))
    agent.close()
    assert files(q, "deferred") == [qid]
    with QueueFileReader(q.path("deferred", qid)) as r:
        assert [x.address for x in r.read_envelope().pending] == ["a@here"]


def test_delay_warning_once_then_cleared(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "4.2.0")
    qid = submit(q, warn=time.time() - 5)
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce)
    assert bounce.kinds() == ["warn"] and bounce.calls[0][3]       # file still in active/
    assert "status=4.2.0" in bounce.calls[0][2]
    with QueueFileReader(q.path("deferred", qid)) as r:
        assert r.read_envelope().warn_time == 0
    run_engine(q, everything=True, bounce=bounce)
    agent.close()
    assert bounce.kinds() == ["warn"]                                # not twice


def test_delay_warning_not_before_its_time(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "4.2.0")
    qid = submit(q, warn=time.time() + 3600)
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce)
    agent.close()
    assert bounce.calls == [] and files(q, "deferred") == [qid]


# -- DSN success notices and sendmail -v / -bv ---------------------------------

def test_notify_success_gets_a_trace_notice_before_removal(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "2.0.0")
    qid = submit(q, rcpts=["a@here"], notify=NOTIFY_SUCCESS | NOTIFY_FAILURE)
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce)
    agent.close()
    ((kind, _, text, in_active, _),) = bounce.calls
    assert kind == "trace" and in_active
    assert "action=delivered" in text and "status=2.0.0" in text and "notify_flags=6" in text
    assert files(q, "deferred") == [] and files(q, "active") == []


def test_no_success_notice_without_notify_success(q):
    agent = FakeAgent(q.dir("private") + "/local", q, lambda a: "2.0.0")
    submit(q, rcpts=["a@here"], notify=NOTIFY_FAILURE)
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce)
    agent.close()
    assert bounce.calls == []


def test_sendmail_v_records_every_result(q):
    agent = FakeAgent(q.dir("private") + "/local", q,
                      lambda a: "2.0.0" if a.startswith("ok") else "5.1.1")
    qid = submit(q, rcpts=["ok@here", "bad@here"], attrs={"trace_flags": str(DEL_REQ_FLAG_RECORD)})
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce)
    agent.close()
    assert bounce.kinds() == ["flush", "trace"]
    trace = bounce.calls[1][2]
    assert "action=delivered" in trace and "action=failed" in trace
    assert bounce.calls[1][4] == DEL_REQ_FLAG_RECORD
    assert files(q, "deferred") == []


def test_verify_request_never_delivers_and_reports_each_address(q):
    # "local" honours the flag here (verify_ok): the fake agent answers
    # through AgentSession, which must neither mark nor report "sent".
    agent = FakeAgent(q.dir("private") + "/local", q,
                      lambda a: "2.0.0" if a.startswith("ok") else "5.1.1")
    qid = submit(q, rcpts=["ok@here", "nobody@here"],
                 attrs={"trace_flags": str(DEL_REQ_FLAG_USR_VRFY)})
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce)
    agent.close()
    ((kind, _, text, in_active, flags),) = bounce.calls
    assert kind == "trace" and in_active and flags == DEL_REQ_FLAG_USR_VRFY
    recs = {r.recipient: r.action for r in read_records(__import__("io").BytesIO(text.encode()))}
    assert recs == {"ok@here": "deliverable", "nobody@here": "undeliverable"}
    assert files(q, "deferred") == [] and files(q, "active") == []


def test_verify_for_an_agent_that_would_deliver_is_answered_by_qmgr(q):
    agent = FakeAgent(q.dir("private") + "/smtp", q, lambda a: "2.0.0")
    submit(q, rcpts=["a@far"], attrs={"trace_flags": str(DEL_REQ_FLAG_USR_VRFY)})
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce, verify_ok=lambda t: False)
    agent.close()
    assert agent.delivered == []                       # the agent was never asked
    ((kind, _, text, _, _),) = bounce.calls
    assert kind == "trace" and "action=deliverable" in text and "delivery via smtp" in text


def test_verify_with_unreachable_agent_is_answered_not_retried(q):
    qid = submit(q, rcpts=["a@far"], attrs={"trace_flags": str(DEL_REQ_FLAG_USR_VRFY)})
    bounce = FakeBounce(q)
    run_engine(q, bounce=bounce)
    assert "action=undeliverable" in bounce.calls[0][2]
    assert files(q, "deferred") == []


# -- content filter and redirect -----------------------------------------------

def test_filter_route():
    assert filter_route("filter:dummy", "a@b.example") == ("filter", "dummy")
    assert filter_route("filter:", "a@b.example") == ("filter", "b.example")
    assert filter_route("filter", "a@b.example", "[127.0.0.1]:10025") == ("filter", "[127.0.0.1]:10025")
    assert filter_route("smtp:[127.0.0.1]:10025", "a@b") == ("smtp", "[127.0.0.1]:10025")


def test_content_filter_sends_every_recipient_to_the_filter(q):
    seen = []

    def never(sender, address):
        raise AssertionError("a filtered message is not resolved")
    filt = FakeAgent(q.dir("private") + "/filter", q, lambda a: "2.0.0")
    orig = filt.serve

    def serve(conn):
        seen.append(conn)
        return orig(conn)
    filt.serve = serve
    qid = submit(q, rcpts=["a@here", "b@far"], filt="filter:dummy")
    run_engine(q, resolve=never, bounce=FakeBounce(q))
    filt.close()
    assert sorted(filt.delivered) == [(qid, "a@here"), (qid, "b@far")]
    assert len(seen) == 1                             # one nexthop "dummy": one request
    assert files(q, "deferred") == [] and files(q, "active") == []


def test_redirect_replaces_all_recipients(q):
    agent = FakeAgent(q.dir("private") + "/smtp", q, lambda a: "2.0.0")
    qid = submit(q, rcpts=["a@here", "b@here"], redirect="quarantine@far")
    run_engine(q, bounce=FakeBounce(q))
    agent.close()
    assert agent.delivered == [(qid, "quarantine@far")]
    assert files(q, "deferred") == [] and files(q, "active") == []


# -- postqueue -i / -s through qmgr --------------------------------------------

def test_qmgr_request_frames_round_trip():
    data = b"W" + qmgr_flush_site("Example.COM") + b"I" + qmgr_flush_id("3F2A81C0B1") + b"{id x/y}"
    req = parse_qmgr_request(data)
    assert (req.codes, req.sites, req.ids) == (b"IW", ["example.com"], ["3F2A81C0B1"])
    with pytest.raises(ValueError):
        qmgr_flush_site("a b")


def test_flush_id_and_site_deliver_deferred_mail_now(q):
    agent = FakeAgent(q.dir("private") + "/smtp", q, lambda a: "4.4.1")
    one = submit(q, rcpts=["a@one.example"])
    two = submit(q, rcpts=["b@two.example"])
    three = submit(q, rcpts=["c@three.example"])
    run_engine(q, bounce=FakeBounce(q))
    assert files(q, "deferred") == sorted([one, two, three])
    agent.decide = lambda a: "2.0.0"

    async def go():
        eng = ActiveQueue(q, Scheduler(lambda n: TransportLimits(n)), resolver,
                          lambda t: os.path.join(q.dir("private"), t), bounce=FakeBounce(q))
        eng.flush_ids([one, "../../etc"])
        await eng.flush_sites(["TWO.example"])
        await asyncio.sleep(0)
        await asyncio.wait_for(eng.idle.wait(), 20)
    asyncio.run(go())
    agent.close()
    assert files(q, "deferred") == [three]
    assert sorted(a for _, a in agent.delivered) == ["a@one.example", "b@two.example"]


# -- postsuper under qmgr's feet -----------------------------------------------

@pytest.mark.parametrize("action", ["delete", "hold"])
def test_postsuper_on_an_active_file_is_silent(q, capfd, action):
    qid = None

    def decide(address):
        entry = q.entry("active", qid)
        if action == "delete":
            os.unlink(entry.path)
        else:
            q.move(entry, "hold")
        return "4.2.0"
    agent = FakeAgent(q.dir("private") + "/local", q, decide)
    qid = submit(q)
    run_engine(q, bounce=FakeBounce(q))
    agent.close()
    err = capfd.readouterr().err
    assert "warning" not in err, err
    assert files(q, "deferred") == [] and files(q, "active") == []
    assert files(q, "hold") == ([qid] if action == "hold" else [])
