"""smtpd through master: a real instance on a loopback port, real clients."""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import time

import pytest

from instance import Instance


def _chat(port: int, lines: list[bytes], timeout: float = 10.0) -> bytes:
    """Send the lines (one write each), return everything the server said."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        buf = s.recv(4096)
        for line in lines:
            s.sendall(line)
            time.sleep(0.05)
        s.shutdown(socket.SHUT_WR)
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionError, socket.timeout):
                break
            if not data:
                break
            buf += data
    return buf


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    root = tmp_path_factory.mktemp("smtpd")
    with Instance(root, main_cf={"myhostname": "mx.example", "alias_maps": "",
                                 "mydestination": "mx.example, localhost",
                                 "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
                                 "mynetworks": "127.0.0.1/32"}) as inst:
        inst.start()
        inst.wait_for_log("daemon started")
        yield inst


def test_message_is_queued_and_logged(inst):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as s:
        code, banner = s.ehlo("client.example")
        assert code == 250 and b"PIPELINING" in banner
        s.mail("a@x.example")
        s.rcpt("root@mx.example")
        code, text = s.data(b"Subject: hi\r\n\r\nhello\r\n")
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), text
    qid = text.split()[-1].decode()
    inst.wait_for_log(rf"smtpd\[\d+\]: {qid}: client=localhost\[127\.0\.0\.1\]")
    inst.wait_for_log(rf"cleanup\[\d+\]: {qid}: message-id=")
    inst.wait_for_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5")


def test_relay_from_outside_mynetworks_is_denied(inst):
    # 127.0.0.2 is not in mynetworks = 127.0.0.1/32.
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20,
                      source_address=("127.0.0.2", 0)) as s:
        s.ehlo("outside.example")
        s.mail("a@x.example")
        code, text = s.rcpt("victim@elsewhere.example")
        assert (code, text) == (554, b"5.7.1 <victim@elsewhere.example>: Relay access denied")
        for evil in ('"victim@elsewhere.example"@mx.example', "victim%elsewhere.example@mx.example",
                     "elsewhere.example!victim@mx.example"):
            code, _ = s.rcpt(evil)
            assert code == 554, evil
    inst.wait_for_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]|"
                      r"NOQUEUE: reject: RCPT from [^ ]+\[127\.0\.0\.2\]: 554 5\.7\.1 "
                      r"<victim@elsewhere\.example>: Relay access denied; from=<a@x\.example> "
                      r"to=<victim@elsewhere\.example> proto=ESMTP helo=<outside\.example>")


def test_need_mail_and_lost_connection(inst):
    out = _chat(inst.smtp_port, [b"EHLO c\r\n", b"RCPT TO:<root@mx.example>\r\n",
                                 b"MAIL FROM:<a@x>\r\n", b"RCPT TO:<root@mx.example>\r\n",
                                 b"DATA\r\n", b"partial\r\n"])
    assert b"503 5.5.1 Error: need MAIL command" in out
    assert b"354 End data with <CR><LF>.<CR><LF>" in out
    inst.wait_for_log(r"lost connection after DATA \(\d+ bytes\) from localhost\[127\.0\.0\.1\]")


def test_timeout_after_command(tmp_path):
    with Instance(tmp_path, main_cf={"smtpd_timeout": "1s", "alias_maps": ""}) as inst:
        inst.start()
        out = _chat(inst.smtp_port, [b"EHLO c\r\n"] + [b""] * 0, timeout=10)
        with socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=10) as s:
            s.recv(1000)
            s.sendall(b"HELO c\r\n")
            time.sleep(2.5)
            data = s.recv(4096)
            data += s.recv(4096)
        assert b"421 4.4.2 localhost.localdomain Error: timeout exceeded" in data
        inst.wait_for_log(r"timeout after HELO from localhost\[127\.0\.0\.1\]")
        assert out.startswith(b"220 ")


def test_too_many_errors(inst):
    out = _chat(inst.smtp_port, [b"EHLO c\r\n"] + [b"XYZZY\r\n"] * 21)
    assert b"421 4.7.0 mx.example Error: too many errors" in out
    inst.wait_for_log(r"too many errors after UNKNOWN from localhost\[127\.0\.0\.1\]|"
                      r"too many errors after [A-Z-]+ from localhost\[127\.0\.0\.1\]")


def test_swaks(inst):
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks not installed")
    p = subprocess.run([swaks, "--server", f"127.0.0.1:{inst.smtp_port}", "--from", "a@x.example",
                        "--to", "root@mx.example", "--helo", "swaks.example", "--pipeline"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "250 2.0.0 Ok: queued as" in p.stdout


def test_smtp_source(inst):
    src = "/usr/sbin/smtp-source"
    if not os.path.exists(src):
        pytest.skip("smtp-source not installed")
    before = inst.log().count("client=localhost[127.0.0.1]")
    p = subprocess.run([src, "-s", "5", "-m", "20", "-f", "a@x.example", "-t", "root@mx.example",
                        f"127.0.0.1:{inst.smtp_port}"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    inst.wait_until(lambda: inst.log().count("client=localhost[127.0.0.1]") >= before + 20,
                    what="20 messages queued")


def test_xclient_changes_identity(tmp_path):
    with Instance(tmp_path, main_cf={"smtpd_authorized_xclient_hosts": "127.0.0.1", "alias_maps": "",
                                     "mynetworks": "127.0.0.1/32",
                                     "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination"}) as inst:
        inst.start()
        out = _chat(inst.smtp_port, [b"EHLO c\r\n", b"XCLIENT ADDR=192.0.2.9 NAME=spoof.example\r\n",
                                     b"EHLO c\r\n", b"MAIL FROM:<a@x>\r\n", b"RCPT TO:<v@elsewhere.example>\r\n",
                                     b"QUIT\r\n"])
        assert b"XCLIENT" in out
        assert b"554 5.7.1 <v@elsewhere.example>: Relay access denied" in out
        inst.wait_for_log(r"reject: RCPT from spoof\.example\[192\.0\.2\.9\]")
