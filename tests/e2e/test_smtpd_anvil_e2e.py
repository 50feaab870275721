"""smtpd's anvil(8) rate limits through master: connection count and rate,
message and recipient rates, and smtpd_client_event_limit_exceptions.

Each limit is hit from its own loopback address, since anvil counts per
(service, client address). Replies and warnings are Postfix's (checked
against Debian's Postfix 3.7: the service is the master.cf service name,
here "127.0.0.1:PORT").
"""

from __future__ import annotations

import contextlib
import re
import smtplib

import pytest

from instance import Instance

EXEMPT = "127.0.0.2"


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    root = tmp_path_factory.mktemp("smtpd-anvil")
    with Instance(root, main_cf={
            "myhostname": "mx.example", "alias_maps": "", "mydestination": "mx.example, localhost",
            "mynetworks": "127.0.0.0/8", "local_recipient_maps": "",
            "local_transport": "discard:local", "default_transport": "discard:remote",
            "smtpd_client_connection_rate_limit": "4",
            "smtpd_client_connection_count_limit": "2",
            "smtpd_client_message_rate_limit": "2",
            "smtpd_client_recipient_rate_limit": "3",
            "smtpd_client_event_limit_exceptions": EXEMPT,
            "anvil_rate_time_unit": "60s"}) as inst:
        text = (inst.config_dir / "master.cf").read_text()
        assert re.search(r"^anvil\s", text, re.M), "the shipped master.cf runs anvil"
        inst.start()
        inst.wait_for_log("daemon started")
        yield inst


def _connect(inst, source: str) -> tuple[smtplib.SMTP, int, bytes]:
    s = smtplib.SMTP(timeout=20, source_address=(source, 0))
    code, text = s.connect("127.0.0.1", inst.smtp_port)
    return s, code, text


def _close(s: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPException, OSError):
        s.quit()
    s.close()


def test_connection_rate_limit(inst):
    codes = []
    for _ in range(6):
        s, code, text = _connect(inst, "127.0.0.3")
        codes.append((code, text))
        _close(s)
    assert [c for c, _ in codes[:4]] == [220] * 4
    assert codes[4] == (421, b"4.7.0 mx.example Error: too many connections from 127.0.0.3")
    inst.wait_for_log(r"warning: Connection rate limit exceeded: 5 from [^ ]+\[127\.0\.0\.3\] "
                      r"for service 127\.0\.0\.1:\d+")


def test_connection_count_limit(inst):
    open_ = []
    try:
        for _ in range(2):
            s, code, _ = _connect(inst, "127.0.0.6")
            assert code == 220
            open_.append(s)
        s, code, text = _connect(inst, "127.0.0.6")
        open_.append(s)
        assert (code, text) == (421, b"4.7.0 mx.example Error: too many connections from 127.0.0.6")
    finally:
        for s in open_:
            _close(s)
    inst.wait_for_log(r"warning: Connection concurrency limit exceeded: 3 from [^ ]+\[127\.0\.0\.6\] "
                      r"for service 127\.0\.0\.1:\d+")
    # Closed sessions are counted down: a new connection is welcome again.
    s, code, _ = _connect(inst, "127.0.0.6")
    _close(s)
    assert code == 220


def test_message_rate_limit(inst):
    s, code, _ = _connect(inst, "127.0.0.4")
    try:
        s.ehlo("client.example")
        got = []
        for _ in range(3):
            got.append(s.mail("a@client.example"))
            s.rset()
    finally:
        _close(s)
    assert [c for c, _ in got[:2]] == [250, 250]
    assert got[2] == (450, b"4.7.1 Error: too much mail from 127.0.0.4")
    inst.wait_for_log(r"warning: Message delivery request rate limit exceeded: 3 from "
                      r"[^ ]+\[127\.0\.0\.4\] for service 127\.0\.0\.1:\d+")


def test_recipient_rate_limit(inst):
    s, code, _ = _connect(inst, "127.0.0.5")
    try:
        s.ehlo("client.example")
        s.mail("a@client.example")
        got = [s.rcpt(f"u{i}@mx.example") for i in range(4)]
    finally:
        _close(s)
    assert [c for c, _ in got[:3]] == [250] * 3
    assert got[3] == (450, b"4.7.1 Error: too many recipients from 127.0.0.5")
    inst.wait_for_log(r"warning: Recipient address rate limit exceeded: 4 from "
                      r"[^ ]+\[127\.0\.0\.5\] for service 127\.0\.0\.1:\d+")


def test_exceptions_are_never_limited(inst):
    for _ in range(6):
        s, code, _ = _connect(inst, EXEMPT)
        try:
            assert code == 220
            s.ehlo("client.example")
            assert s.mail("a@client.example")[0] == 250
            for i in range(4):
                assert s.rcpt(f"u{i}@mx.example")[0] == 250
        finally:
            _close(s)
    assert not re.search(r"limit exceeded: \d+ from [^ ]+\[127\.0\.0\.2\]", inst.log())
