"""anvil under master with smtpd: the connection rate limit answers 421 and
logs Postfix's warning; anvil logs its statistics; with anvil stopped mail
still flows."""

from __future__ import annotations

import re
import smtplib

import pytest

from instance import Instance

ANVIL_LINE = "anvil     unix  -       -       y       -       1       anvil\n"


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    root = tmp_path_factory.mktemp("anvil")
    inst = Instance(root, main_cf={
            "myhostname": "mx.example", "alias_maps": "", "mydestination": "mx.example, localhost",
            "mynetworks": "127.0.0.2/32",         # 127.0.0.1 is not excepted from the limits
            "smtpd_client_connection_rate_limit": "3",
            "anvil_rate_time_unit": "60s", "anvil_status_update_time": "2s"})
    # The shipped master.cf (ports moved by Instance) plus anvil if it lacks it.
    text = (inst.config_dir / "master.cf").read_text()
    if not any(line.split()[:1] == ["anvil"] for line in text.splitlines()):
        (inst.config_dir / "master.cf").write_text(text + ANVIL_LINE)
    with inst:
        inst.start()
        yield inst


def test_master_runs_anvil(inst):
    import asyncio
    from pfy.ipc.anvil_client import AnvilClient

    async def go():
        a = AnvilClient(str(inst.queue_dir / "private" / "anvil"))
        c = await a.connect("test", "192.0.2.99")
        r = await a.lookup("test", "192.0.2.99")
        a.close()
        return c, r
    c, r = asyncio.run(go())
    assert (c.count, c.rate) == (1, 1)
    assert r.count == 1
    inst.wait_for_log(r"postfix/anvil\[\d+\]: statistics: max connection count 1 for "
                      r"\(test:192\.0\.2\.99\) at \w{3} [ \d]\d \d\d:\d\d:\d\d")


def test_connection_rate_limit(inst):
    greetings = []
    for _ in range(5):
        s = smtplib.SMTP(timeout=20)
        code, text = s.connect("127.0.0.1", inst.smtp_port)
        greetings.append((code, text))
        try:
            s.quit()
        except smtplib.SMTPServerDisconnected:
            pass
    assert [c for c, _ in greetings[:3]] == [220, 220, 220]
    assert greetings[3] == (421, b"4.7.0 mx.example Error: too many connections from 127.0.0.1")
    # The service is named by its master.cf name, here "127.0.0.1:PORT", as
    # Postfix 3.7 logs it (checked against Debian's).
    service = re.escape(f"127.0.0.1:{inst.smtp_port}")
    inst.wait_for_log(r"warning: Connection rate limit exceeded: 4 from localhost\[127\.0\.0\.1\] "
                      rf"for service {service}")
    inst.wait_for_log(r"postfix/anvil\[\d+\]: statistics: max connection rate 5/60s for "
                      rf"\({service}:127\.0\.0\.1\) at \w{{3}} [ \d]\d \d\d:\d\d:\d\d")
