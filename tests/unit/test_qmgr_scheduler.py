"""The qmgr scheduler with a fake clock and fake agents (no I/O)."""

import pytest

from pfy.daemons.qmgr.scheduler import Scheduler, TransportLimits, parse_feedback


def sched(**kw):
    limits = {"smtp": TransportLimits("smtp", **kw),
              "local": TransportLimits("local", dest_concurrency_limit=2, recipient_limit=1)}
    return Scheduler(lambda name: limits.get(name) or TransportLimits(name))


def drain(s, now=0.0):
    out = []
    while (d := s.next_delivery(now)) is not None:
        out.append(d)
    return out


def test_recipient_limit_splits_and_local_queues_per_recipient():
    s = sched(recipient_limit=2)
    s.add("m1", "smtp", "example.com", [(f"u{i}@example.com", i) for i in range(5)], 0)
    got = [d.recipients for d in drain(s)]
    assert got == [[0, 1], [2, 3], [4]], got
    s.add("m2", "local", "host", [("alice@host", "a"), ("bob@host", "b")], 0)
    ds = drain(s)
    assert sorted(d.queue_key for d in ds) == ["alice@host@host", "bob@host@host"]


def test_feedback_sequence():
    s = Scheduler(lambda n: TransportLimits(n, initial_concurrency=2,
                                            dest_concurrency_limit=4, recipient_limit=5))
    for i in range(30):
        s.add(f"m{i}", "smtp", "x.org", [("u@x.org", i)], 0)
    running = drain(s)
    assert len(running) == 2
    s.done(running.pop(0), 0)                       # window 3
    running += drain(s)
    assert len(running) == 3
    s.done(running.pop(0), 0)                       # window 4 (the limit)
    running += drain(s)
    assert len(running) == 4
    s.done(running.pop(0), 0)                       # stays 4
    running += drain(s)
    assert len(running) == 4
    assert s.window("smtp", "x.org") == 4


def test_dead_destination_defers_waiting_mail_and_revives():
    s = Scheduler(lambda n: TransportLimits(n, initial_concurrency=1, recipient_limit=5,
                                            dead_retry=60))
    for i in range(3):
        s.add(f"m{i}", "smtp", "dead.example", [("u@dead.example", i)], 0)
    d = s.next_delivery(0)
    refused = s.done(d, 10, throttle=("4.4.1", "connect refused"))
    assert [m for m, _, _ in refused] == ["m1", "m2"]
    assert all(why == ("4.4.1", "connect refused") for _, _, why in refused)
    assert s.is_dead("smtp", "dead.example", 11)
    late = s.add("m3", "smtp", "dead.example", [("u@dead.example", 3)], 20)
    assert [m for m, _, _ in late] == ["m3"]
    # after the retry time, the destination takes mail again with window 1
    assert s.add("m4", "smtp", "dead.example", [("u@dead.example", 4)], 71) == []
    assert s.next_delivery(71).message == "m4"


def test_failed_cohort_limit_zero_never_dies():
    s = Scheduler(lambda n: TransportLimits(n, initial_concurrency=4, failed_cohort_limit=0))
    for i in range(6):
        s.add(f"m{i}", "smtp", "flaky", [("u@flaky", i)], 0)
    ds = drain(s)
    assert len(ds) == 4
    assert s.done(ds[0], 1, throttle=("4.4.1", "x")) == []
    assert s.window("smtp", "flaky") == 3


def test_slow_destination_does_not_starve_others():
    s = Scheduler(lambda n: TransportLimits(n, initial_concurrency=2,
                                            dest_concurrency_limit=2, recipient_limit=10))
    for i in range(50):
        s.add(f"slow{i}", "smtp", "slow.example", [("u@slow.example", i)], 0)
    for i in range(3):
        s.add(f"fast{i}", "smtp", "fast.example", [("u@fast.example", i)], 0)
    started = drain(s)
    # slow holds only its window; fast gets its own two at once
    assert sorted(d.nexthop for d in started) == ["fast.example"] * 2 + ["slow.example"] * 2
    fast = [d for d in started if d.nexthop == "fast.example"]
    s.done(fast[0], 0)
    nxt = drain(s)
    assert [d.message for d in nxt] == ["fast2"], [d.message for d in nxt]


def test_round_robin_between_destinations():
    s = Scheduler(lambda n: TransportLimits(n, initial_concurrency=100,
                                            dest_concurrency_limit=100, process_limit=3))
    for i in range(4):
        s.add(f"a{i}", "smtp", "a", [("u@a", 0)], 0)
        s.add(f"b{i}", "smtp", "b", [("u@b", 0)], 0)
    first = drain(s)
    assert len(first) == 3                          # process limit
    assert {d.nexthop for d in first} == {"a", "b"}
    order = []
    for d in first:
        s.done(d, 0)
        order += [x.nexthop for x in drain(s)]
    assert "a" in order and "b" in order


def test_transports_take_turns():
    s = sched(recipient_limit=1)
    for i in range(5):
        s.add(f"s{i}", "smtp", f"d{i}", [(f"u@d{i}", i)], 0)
        s.add(f"l{i}", "local", "host", [(f"u{i}@host", i)], 0)
    first = [s.next_delivery(0).transport for _ in range(4)]
    assert sorted(first) == ["local", "local", "smtp", "smtp"], first


@pytest.mark.parametrize("text,want", [
    ("1", (1.0, False)), ("1/2", (0.5, False)), ("1/concurrency", (1.0, True)),
    ("2", (1.0, False)), ("0", (0.0, False)),
])
def test_parse_feedback(text, want):
    assert parse_feedback(text) == want


def test_unknown_delivery_done_is_ignored():
    s = sched()
    s.add("m", "smtp", "x", [("u@x", 1)], 0)
    d = s.next_delivery(0)
    s.done(d, 0)
    assert s.done(d, 0) == []
    assert s.in_flight == 0 and s.pending() == 0
