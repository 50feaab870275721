"""smtp(8) MX routing against tests/dnsserver.py: preference order with a
dead first MX, null MX (RFC 7505) bounced, a temporary DNS failure deferred,
and mail that loops back to this host."""

from __future__ import annotations

from instance import Instance
from test_smtp_delivery import sink
from tests.dnsserver import DnsServer


def test_mx_routing(tmp_path, monkeypatch):
    with sink(host="127.0.0.6") as port:
        zones = {
            "mx.example": {"MX": [(10, "mx1.mx.example"), (20, "mx2.mx.example")]},
            "mx1.mx.example": {"A": ["127.0.0.5"]},        # nothing listens
            "mx2.mx.example": {"A": ["127.0.0.6"]},        # the sink
            "null.example": {"MX": [(0, ".")]},
            "loop.example": {"MX": [(10, "self.loop.example")]},
            "self.loop.example": {"A": ["127.0.0.1"]},      # inet_interfaces
            "noa.example": {"A": ["127.0.0.6"]},            # no MX: A fallback
        }
        with DnsServer(zones) as dns:
            dns.fail.add("broken.example")
            monkeypatch.setenv("PFY_RESOLV_CONF", dns.resolv_conf)
            with Instance(tmp_path, main_cf={"myhostname": "pfy.example",
                                             "smtp_tcp_port": str(port)}) as inst:
                inst.start()
                for rcpt in ("u@mx.example", "u@null.example", "u@broken.example",
                             "u@loop.example", "u@noa.example"):
                    p = inst.command("sendmail", "-f", "a@pfy.example", rcpt, input=b"Subject: mx\n\nx\n")
                    assert p.returncode == 0, p.stderr
                inst.wait_for_log(rf"connect to mx1.mx.example\[127.0.0.5\]:{port}: Connection refused")
                sent = inst.wait_for_log(r"to=<u@mx.example>.*status=sent")[0]
                assert f"relay=mx2.mx.example[127.0.0.6]:{port}" in sent
                null = inst.wait_for_log(r"to=<u@null.example>.*status=bounced")[0]
                assert "dsn=5.1.0" in null and "does not accept mail (nullMX)" in null
                temp = inst.wait_for_log(r"to=<u@broken.example>.*status=deferred")[0]
                assert "dsn=4.4.3" in temp and "Name service error for name=broken.example type=MX" in temp
                loop = inst.wait_for_log(r"to=<u@loop.example>.*status=bounced")[0]
                assert "mail for loop.example loops back to myself" in loop
                fallback = inst.wait_for_log(r"to=<u@noa.example>.*status=sent")[0]
                assert f"relay=noa.example[127.0.0.6]:{port}" in fallback
