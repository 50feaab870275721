"""DNS-based restrictions end to end, against tests/dnsserver.py on loopback
(the whole instance is pointed at it with PFY_RESOLV_CONF):
reject_rbl_client with a reply filter, rbl_reply_maps and the default
reply, reject_unknown_client_hostname, reject_unknown_helo_hostname and
reject_unknown_sender_domain, including a temporary DNS failure.

Client addresses in 127.0.0.0/8 stand for different hosts:
    127.0.0.2  good name, listed in zen.example (127.0.0.2, TXT reason)
    127.0.0.3  good name, listed in plain.example (no reply map entry)
    127.0.0.4  no PTR record
    127.0.0.5  PTR to a name that does not resolve back (forged)
    127.0.0.6  good name, listed in zen.example as 127.0.0.99 (outside the filter)
    127.0.0.7  good name, not listed: the control
"""

from __future__ import annotations

import os
import smtplib
import sys
from pathlib import Path

import pytest

from instance import Instance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dnsserver import DnsServer  # noqa: E402


def _host(n: int) -> dict:
    return {f"{n}.0.0.127.in-addr.arpa": {"PTR": [f"host{n}.client.example"]},
            f"host{n}.client.example": {"A": [f"127.0.0.{n}"]}}


ZONES: dict = {}
for n in (2, 3, 6, 7):
    ZONES.update(_host(n))
ZONES.update({
    "5.0.0.127.in-addr.arpa": {"PTR": ["forged.client.example"]},
    "forged.client.example": {"A": ["192.0.2.55"]},
    # DNSBL zones: the client address reversed under the list's domain.
    "2.0.0.127.zen.example": {"A": ["127.0.0.2"], "TXT": ["listed for spamming"]},
    "6.0.0.127.zen.example": {"A": ["127.0.0.99"]},
    "3.0.0.127.plain.example": {"A": ["127.0.0.4"], "TXT": ["plain listing"]},
    # Sender and HELO domains.
    "client.example": {"MX": [(10, "mx.client.example")]},
    "mx.client.example": {"A": ["192.0.2.10"]},
    "flaky.example": {"MX": [(10, "mx.flaky.example")]},
    "zen.example": {"NS": ["ns.zen.example"]},
    "plain.example": {"NS": ["ns.plain.example"]},
})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("dnsbl")
    reply_map = root / "rbl_reply"
    # $-variables are the map's business: rbl_reply_maps text is expanded
    # per lookup with the rbl_* values, never by main.cf.
    reply_map.write_text("zen.example $rbl_code 5.7.1 Custom: $rbl_what listed by "
                         "$rbl_domain ($rbl_reason)\n")
    with DnsServer(ZONES) as dns:
        old = os.environ.get("PFY_RESOLV_CONF")
        os.environ["PFY_RESOLV_CONF"] = dns.resolv_conf
        try:
            with Instance(root, main_cf={
                "myhostname": "mx.example",
                "mydestination": "mx.example, localhost",
                "mynetworks": "127.0.0.1/32",
                "local_recipient_maps": "",
                "alias_maps": "",
                "local_transport": "discard:local",
                "default_transport": "discard:remote",
                "smtpd_recipient_restrictions": (
                    "reject_unknown_client_hostname, "
                    "reject_rbl_client zen.example=127.0.0.[2..11], "
                    "reject_rbl_client plain.example, "
                    "reject_unknown_helo_hostname, "
                    "reject_unknown_sender_domain, "
                    "permit_mynetworks, reject_unauth_destination"),
                "rbl_reply_maps": f"texthash:{reply_map}",
            }) as inst:
                inst.start()
                inst.wait_for_log("daemon started")
                yield inst, dns
        finally:
            if old is None:
                os.environ.pop("PFY_RESOLV_CONF", None)
            else:
                os.environ["PFY_RESOLV_CONF"] = old


def rcpt(inst, client: str, helo: str = "host7.client.example",
         sender: str = "a@client.example") -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30, source_address=(client, 0)) as s:
        s.ehlo(helo)
        code, text = s.mail(sender)
        assert code == 250, text
        code, text = s.rcpt("user@mx.example")
        return code, text.decode()


def test_control_passes(env):
    inst, _ = env
    assert rcpt(inst, "127.0.0.7") == (250, "2.1.5 Ok")
    inst.wait_for_log(r"connect from host7\.client\.example\[127\.0\.0\.7\]")


def test_rbl_with_reply_map(env):
    inst, _ = env
    code, text = rcpt(inst, "127.0.0.2", helo="host2.client.example")
    assert (code, text) == (554, "5.7.1 Custom: 127.0.0.2 listed by zen.example (listed for spamming)")
    inst.wait_for_log(r"NOQUEUE: reject: RCPT from host2\.client\.example\[127\.0\.0\.2\]: 554 5\.7\.1 "
                      r"Custom: 127\.0\.0\.2 listed by zen\.example \(listed for spamming\); "
                      r"from=<a@client\.example> to=<user@mx\.example> proto=ESMTP "
                      r"helo=<host2\.client\.example>")


def test_rbl_default_reply(env):
    """No reply map entry: default_rbl_reply, read raw (never $-expanded by
    main.cf), as Postfix words it."""
    inst, _ = env
    code, text = rcpt(inst, "127.0.0.3", helo="host3.client.example")
    assert (code, text) == (554, "5.7.1 Service unavailable; Client host [127.0.0.3] blocked "
                                 "using plain.example; plain listing")


def test_rbl_reply_filter(env):
    """127.0.0.6 is listed as 127.0.0.99: outside zen.example=127.0.0.[2..11]."""
    inst, _ = env
    assert rcpt(inst, "127.0.0.6", helo="host6.client.example") == (250, "2.1.5 Ok")


def test_unknown_client_hostname_no_ptr(env):
    inst, _ = env
    code, text = rcpt(inst, "127.0.0.4")
    assert (code, text) == (450, "4.7.1 Client host rejected: cannot find your hostname, [127.0.0.4]")
    inst.wait_for_log(r"connect from unknown\[127\.0\.0\.4\]")


def test_unknown_client_hostname_forged(env):
    inst, _ = env
    code, text = rcpt(inst, "127.0.0.5")
    assert (code, text) == (450, "4.7.1 Client host rejected: cannot find your hostname, [127.0.0.5]")
    inst.wait_for_log(r"warning: hostname forged\.client\.example does not resolve to address 127\.0\.0\.5")


def test_unknown_helo_hostname(env):
    inst, _ = env
    code, text = rcpt(inst, "127.0.0.7", helo="nosuchhost.example")
    assert (code, text) == (450, "4.7.1 <nosuchhost.example>: Helo command rejected: Host not found")


def test_unknown_sender_domain(env):
    inst, _ = env
    code, text = rcpt(inst, "127.0.0.7", sender="a@nosuchdomain.example")
    assert (code, text) == (450, "4.1.8 <a@nosuchdomain.example>: Sender address rejected: Domain not found")


def test_sender_domain_temporary_failure(env):
    inst, dns = env
    dns.fail.add("flaky.example")
    try:
        code, text = rcpt(inst, "127.0.0.7", sender="a@flaky.example")
    finally:
        dns.fail.discard("flaky.example")
    # Postfix: a temporary DNS error is always a 4xx, never a permanent reject.
    assert code // 100 == 4, (code, text)
    assert "<a@flaky.example>: Sender address rejected" in text
