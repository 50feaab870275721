"""The smtp agent's DANE level decisions (Postfix smtp_tls_policy.c
dane_init()) with a stub resolver: what each DNS outcome makes of "dane"
and "dane-only"."""

from __future__ import annotations

import asyncio

import pytest

from pfy.config import load_config
from pfy.daemons.smtp.agent import Agent, SessionFailed
from pfy.daemons.smtp.routing import Target, parse_nexthop
from pfy.dns import DnsAnswer, DnsStatus
from pfy.tls.client import ClientTlsPolicy

EE = "3 1 1 " + "ab" * 32
PKIX = "1 1 1 " + "ab" * 32


class StubResolver:
    def __init__(self, answer: DnsAnswer):
        self.answer = answer
        self.asked: list = []

    async def tlsa(self, port, host):
        self.asked.append((port, host))
        return self.answer


class StubTls:
    dane_digests = {2: "sha512", 1: "sha256"}


def agent(tmp_path, answer, **main_cf):
    text = "".join(f"{k} = {v}\n" for k, v in {"smtp_dns_support_level": "dnssec",
                                               **main_cf}.items())
    (tmp_path / "main.cf").write_text(text)
    a = Agent(load_config(str(tmp_path)), lmtp=False, resolver=StubResolver(answer),
              tls=StubTls())
    return a


def decide(a, level, target):
    nh = parse_nexthop("dest.example", 25)
    return asyncio.run(a._dane_policy(ClientTlsPolicy(level), target, nh))


SECURE = Target("mx.dest.example", "192.0.2.1", 25, dnssec=True, mx_dnssec=True)
FOUND = DnsAnswer(DnsStatus.FOUND, [EE], 60, secure=True)


def test_secure_tlsa_makes_dane_mandatory(tmp_path):
    p = decide(agent(tmp_path, FOUND), "dane", SECURE)
    assert p.level == "dane" and p.mandatory and not p.half_dane
    assert [str(r) for r in p.tlsa] == [EE] and p.dane_names == ("mx.dest.example",)
    p = decide(agent(tmp_path, FOUND), "dane-only", SECURE)
    assert p.level == "dane" and p.mandatory


@pytest.mark.parametrize("answer,dane_level,only_reason", [
    (DnsAnswer(DnsStatus.NOTFOUND), "may", "no TLSA records found"),
    (DnsAnswer(DnsStatus.FOUND, [EE], 60, secure=False), "may", "no TLSA records found"),
    (DnsAnswer(DnsStatus.FOUND, [PKIX], 60, secure=True), "encrypt", "TLSA records unusable"),
])
def test_fallbacks(tmp_path, answer, dane_level, only_reason):
    assert decide(agent(tmp_path, answer), "dane", SECURE).level == dane_level
    with pytest.raises(SessionFailed) as e:
        decide(agent(tmp_path, answer), "dane-only", SECURE)
    assert (e.value.dsn, e.value.reason) == ("4.7.5", only_reason)


def test_tlsa_lookup_failure_defers(tmp_path):
    for level in ("dane", "dane-only"):
        with pytest.raises(SessionFailed) as e:
            decide(agent(tmp_path, DnsAnswer(DnsStatus.TEMPFAIL)), level, SECURE)
        assert (e.value.dsn, e.value.reason) == ("4.7.5",
                                                 "TLSA lookup error for mx.dest.example:25")


def test_insecure_host_skips_tlsa_lookup(tmp_path):
    a = agent(tmp_path, FOUND)
    t = Target("mx.dest.example", "192.0.2.1", 25, dnssec=False, mx_dnssec=True)
    assert decide(a, "dane", t).level == "may" and a.resolver.asked == []
    a = agent(tmp_path, FOUND, smtp_tls_force_insecure_host_tlsa_lookup="yes")
    assert decide(a, "dane", t).level == "dane"


def test_insecure_mx(tmp_path):
    t = Target("mx.dest.example", "192.0.2.1", 25, dnssec=True, mx_dnssec=False)
    # Level dane from main.cf: smtp_tls_dane_insecure_mx_policy defaults to dane.
    p = decide(agent(tmp_path, FOUND, smtp_tls_security_level="dane"), "dane", t)
    assert p.level == "dane" and p.half_dane
    # Level dane from a policy table only: the default is may.
    assert decide(agent(tmp_path, FOUND), "dane", t).level == "may"
    a = agent(tmp_path, FOUND, smtp_tls_dane_insecure_mx_policy="encrypt")
    assert decide(a, "dane", t).level == "encrypt"
    with pytest.raises(SessionFailed) as e:
        decide(agent(tmp_path, FOUND, smtp_tls_security_level="dane"), "dane-only", t)
    assert e.value.reason == "non DNSSEC destination"


def test_dnssec_disabled(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr("pfy.daemons.smtp.agent.log.warning", warnings.append)
    a = agent(tmp_path, FOUND, smtp_dns_support_level="enabled")
    assert decide(a, "dane", SECURE).level == "may"
    with pytest.raises(SessionFailed) as e:
        decide(a, "dane-only", SECURE)
    assert (e.value.dsn, e.value.reason) == ("4.7.5", "client TLS configuration problem")
    assert warnings == ["dest.example: dane configured with dnssec lookups disabled",
                        "dest.example: dane-only configured with dnssec lookups disabled"]
