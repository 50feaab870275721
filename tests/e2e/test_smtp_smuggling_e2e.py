"""SMTP smuggling end to end: no variant of a bare-newline end-of-data
ends the message or starts a second one (Postfix 3.9's
smtpd_forbid_bare_newline, on by default)."""

from __future__ import annotations

import re
import socket
import time

import pytest

from instance import Instance

VARIANTS = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "cr_dot_cr": b"\r.\r",
    "crlf_dot_lf": b"\r\n.\n",
}


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    root = tmp_path_factory.mktemp("smuggle")
    with Instance(root, main_cf={"myhostname": "mx.example", "alias_maps": "",
                                 "mydestination": "mx.example, localhost"}) as inst:
        inst.start()
        yield inst


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_no_second_message(inst, name):
    end = VARIANTS[name]
    payload = (b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<root@mx.example>\r\nDATA\r\n"
               b"Subject: first\r\n\r\nbody" + end +
               b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<root@mx.example>\r\nDATA\r\n"
               b"Subject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n")
    with socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=15) as s:
        s.recv(1000)
        # Not pipelined before the greeting reply: send the dialogue in
        # steps the way a smuggling sender would after 354.
        s.sendall(b"EHLO c\r\n")
        time.sleep(0.2)
        s.recv(4096)
        s.sendall(payload[len(b"EHLO c\r\n"):payload.index(b"DATA\r\n") + 6])
        time.sleep(0.3)
        s.sendall(payload[payload.index(b"DATA\r\n") + 6:])
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionError, socket.timeout):
                break
            if not data:
                break
            out += data
    queued = re.findall(rb"250 2\.0\.0 Ok: queued as (\w+)", out)
    assert len(queued) <= 1, out
    assert b"evil@x.example" not in out
    # The smuggled MAIL was content of the first message, never a command.
    assert out.count(b"250 2.1.0") == 1, out
