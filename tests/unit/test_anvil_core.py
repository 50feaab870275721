"""anvil's counters (fixed rate windows, connection counts, expiry, peak
statistics) and the smtpd policy on top (replies and warning lines)."""

import asyncio
import time

import pytest

from pfy.daemons.anvil import AnvilCore
from pfy.ipc.anvil_client import AnvilCounts, RateLimits

ID = "smtp:192.0.2.7"


def test_connect_counts_and_rates_in_fixed_windows():
    a = AnvilCore(60)
    r = a.handle("connect", ID, now=1000)
    assert (r.status, r.count, r.rate) == (0, 1, 1)
    r = a.handle("connect", ID, now=1010)
    assert (r.count, r.rate) == (2, 2)
    a.handle("disconnect", ID, now=1011)
    assert a.handle("lookup", ID, now=1011).count == 1
    # 60 s after the window started, the next event opens a new window.
    r = a.handle("connect", ID, now=1061)
    assert (r.count, r.rate) == (2, 1)


def test_per_kind_rates():
    a = AnvilCore(60)
    for kind, field in (("message", "mail"), ("recipient", "rcpt"), ("auth", "auth"),
                        ("newtls", "newtls")):
        assert a.handle(kind, ID, now=5).rate == 1
        assert a.handle(kind, ID, now=6).rate == 2
        assert getattr(a.handle("lookup", ID, now=6), field) == 2
    # newtls_status reads without counting
    assert a.handle("newtls_status", ID, now=7).rate == 2
    assert a.handle("newtls_status", ID, now=7).rate == 2
    assert a.handle("newtls_status", "smtp:198.51.100.1", now=7).rate == 0


def test_services_and_addresses_are_separate():
    a = AnvilCore(60)
    a.handle("connect", "smtp:192.0.2.7", now=1)
    assert a.handle("connect", "submission:192.0.2.7", now=1).count == 1
    assert a.handle("connect", "smtp:192.0.2.8", now=1).count == 1


def test_bad_requests_fail():
    a = AnvilCore(60)
    assert a.handle("explode", ID).status == -1
    assert a.handle("connect", "").status == -1
    assert a.handle("connect", "x" * 5000).status == -1


def test_disconnect_never_goes_negative_and_unknown_is_ok():
    a = AnvilCore(60)
    assert a.handle("disconnect", ID, now=1).status == 0
    a.handle("connect", ID, now=1)
    a.handle("disconnect", ID, now=2)
    a.handle("disconnect", ID, now=2)
    assert a.handle("lookup", ID, now=2).count == 0


def test_expiry_keeps_connected_clients():
    a = AnvilCore(60)
    a.handle("connect", "smtp:a", now=0)
    a.handle("message", "smtp:b", now=0)
    assert a.expire(now=30) == 0
    assert a.expire(now=61) == 1
    assert set(a.remotes) == {"smtp:a"}


def test_drop_connections_of_a_vanished_client():
    a = AnvilCore(60)
    for _ in range(3):
        a.handle("connect", ID, now=0)
    a.drop_connections({ID: 2}, now=1)
    assert a.handle("lookup", ID, now=1).count == 1


def test_status_lines_are_postfix_lines_and_reset():
    a = AnvilCore(60)
    t = time.mktime((2024, 11, 22, 10, 15, 1, 0, 0, -1))
    for i in range(3):
        a.handle("connect", "smtp:127.0.0.1", now=t)
    a.handle("message", "smtp:127.0.0.1", now=t)
    a.handle("recipient", "smtp:127.0.0.1", now=t)
    a.handle("auth", "smtp:127.0.0.1", now=t)
    a.handle("newtls", "smtp:127.0.0.1", now=t)
    assert a.status_lines() == [
        "statistics: max connection rate 3/60s for (smtp:127.0.0.1) at Nov 22 10:15:01",
        "statistics: max connection count 3 for (smtp:127.0.0.1) at Nov 22 10:15:01",
        "statistics: max message rate 1/60s for (smtp:127.0.0.1) at Nov 22 10:15:01",
        "statistics: max recipient rate 1/60s for (smtp:127.0.0.1) at Nov 22 10:15:01",
        "statistics: max new TLS sessions 1/60s for (smtp:127.0.0.1) at Nov 22 10:15:01",
        "statistics: max auth rate 1/60s for (smtp:127.0.0.1) at Nov 22 10:15:01",
        "statistics: max cache size 1 at Nov 22 10:15:01",
    ]
    assert a.status_lines() == []


# ---------------------------------------------------------------------------
# the smtpd policy

class FakeAnvil:
    def __init__(self, count=1, rate=1, other=1, down=False):
        self.count, self.rate, self.other, self.down = count, rate, other, down
        self.calls = []

    async def connect(self, service, addr):
        self.calls.append(("connect", service, addr))
        return None if self.down else AnvilCounts(self.count, self.rate)

    async def disconnect(self, service, addr):
        self.calls.append(("disconnect", service, addr))

    async def _rate(self, *a):
        return None if self.down else self.other
    message = recipient = auth = newtls = newtls_status = _rate


class Nets:
    def __init__(self, *addrs):
        self.addrs = addrs

    def match(self, name, addr):
        return addr in self.addrs


def limits(anvil, **kw):
    base = dict(service="smtp", myhostname="mx.example", connection_count_limit=50)
    base.update(kw)
    return RateLimits(anvil, **base)


def run(coro):
    return asyncio.run(coro)


def test_connection_rate_limit_reply_and_warning():
    rates = limits(FakeAnvil(count=1, rate=31), connection_rate_limit=30).session(
        "host.example", "192.0.2.7", "host.example[192.0.2.7]")
    v = run(rates.connect())
    assert v.reply.lines() == ["421 4.7.0 mx.example Error: too many connections from 192.0.2.7"]
    assert v.warning == ("Connection rate limit exceeded: 31 from host.example[192.0.2.7] "
                         "for service smtp")


def test_connection_count_limit():
    v = run(limits(FakeAnvil(count=51)).session("h", "192.0.2.7", "h[192.0.2.7]").connect())
    assert v.reply.code == 421
    assert v.warning.startswith("Connection concurrency limit exceeded: 51 from h[192.0.2.7]")


@pytest.mark.parametrize("method, kw, line, warning", [
    ("mail", "message_rate_limit", "450 4.7.1 Error: too much mail from 192.0.2.7",
     "Message delivery request rate limit exceeded"),
    ("rcpt", "recipient_rate_limit", "450 4.7.1 Error: too many recipients from 192.0.2.7",
     "Recipient address rate limit exceeded"),
    ("auth", "auth_rate_limit", "450 4.7.1 Error: too many AUTH commands from 192.0.2.7",
     "AUTH command rate limit exceeded"),
    ("starttls", "new_tls_session_rate_limit",
     "454 4.7.0 Error: too many new TLS sessions from 192.0.2.7",
     "New TLS session rate limit exceeded"),
])
def test_event_rate_limits(method, kw, line, warning):
    over = limits(FakeAnvil(other=6), **{kw: 5}).session("h", "192.0.2.7", "h[192.0.2.7]")
    v = run(getattr(over, method)())
    assert v.reply.lines() == [line]
    assert v.warning == f"{warning}: 6 from h[192.0.2.7] for service smtp"
    at = limits(FakeAnvil(other=5), **{kw: 5}).session("h", "192.0.2.7", "h[192.0.2.7]")
    assert run(getattr(at, method)()) is None
    off = limits(FakeAnvil(other=500)).session("h", "192.0.2.7", "h[192.0.2.7]")
    assert run(getattr(off, method)()) is None          # 0 = no limit


def test_exceptions_and_anvil_down_never_limit():
    anvil = FakeAnvil(count=999, rate=999, other=999)
    ex = limits(anvil, connection_rate_limit=1, message_rate_limit=1,
                exceptions=Nets("127.0.0.1")).session("localhost", "127.0.0.1", "localhost[127.0.0.1]")
    assert run(ex.connect()) is None and run(ex.mail()) is None
    assert anvil.calls == []                    # excepted clients are not even counted
    down = limits(FakeAnvil(down=True), connection_rate_limit=1, message_rate_limit=1)
    s = down.session("h", "192.0.2.7", "h[192.0.2.7]")
    assert run(s.connect()) is None and run(s.mail()) is None


def test_disconnect_only_after_counted_connect():
    anvil = FakeAnvil()
    s = limits(anvil).session("h", "192.0.2.7", "h[192.0.2.7]")
    run(s.disconnect())
    assert anvil.calls == []
    run(s.connect())
    run(s.disconnect())
    run(s.disconnect())
    assert [c[0] for c in anvil.calls] == ["connect", "disconnect"]


def test_tls_handshake_counts_only_new_sessions():
    s = limits(FakeAnvil(other=3), new_tls_session_rate_limit=2).session("h", "192.0.2.7", "h[192.0.2.7]")
    assert run(s.tls_handshake(reused=True)) is None
    v = run(s.tls_handshake(reused=False))
    assert v.reply.lines() == ["421 4.7.0 mx.example Error: too many new TLS sessions from 192.0.2.7"]
