"""STARTTLS with a certificate made by pfy.tls.certs, TLS log lines and
Received comment, wrapper mode, encrypt level, STARTTLS injection."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time

import pytest

from instance import Instance
from pfy.tls.certs import write_key_and_cert


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    key, cert = root / "key.pem", root / "cert.pem"
    write_key_and_cert(str(key), str(cert), "mx.example")
    eckey, eccert = root / "eckey.pem", root / "eccert.pem"
    write_key_and_cert(str(eckey), str(eccert), "mx.example", key_type="ecdsa")
    with Instance(root, main_cf={
            "myhostname": "mx.example", "alias_maps": "", "mydestination": "mx.example, localhost",
            "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key), "smtpd_tls_eccert_file": str(eccert),
            "smtpd_tls_eckey_file": str(eckey), "smtpd_tls_received_header": "yes",
            # Let STARTTLS-then-RSET through the pipelining check so that
            # the injection test reaches the plaintext-discarding path.
            "smtpd_forbid_unauth_pipelining": "no"}) as inst:
        inst.start()
        yield inst


def test_starttls_delivers_and_logs(inst):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as s:
        code, caps = s.ehlo("c.example")
        assert b"STARTTLS" in caps
        s.starttls(context=_client_ctx())
        code, caps = s.ehlo("c.example")
        assert b"STARTTLS" not in caps
        s.mail("a@x.example")
        s.rcpt("root@mx.example")
        code, text = s.data(b"Subject: tls\r\n\r\nsecret\r\n")
        assert code == 250, text
    inst.wait_for_log(r"Anonymous TLS connection established from localhost\[127\.0\.0\.1\]: "
                      r"TLSv1\.3 with cipher TLS_\w+ \(\d+/\d+ bits\)")
    inst.wait_for_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7")


def test_starttls_injection(inst):
    """CVE-2011-0411: a command pipelined after STARTTLS in plaintext is
    dropped, never executed inside the TLS session."""
    raw = socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=10)
    raw.recv(1000)
    raw.sendall(b"EHLO c\r\n")
    time.sleep(0.2)
    raw.recv(4096)
    raw.sendall(b"STARTTLS\r\nRSET\r\n")
    time.sleep(0.2)
    reply = raw.recv(4096)
    assert reply.startswith(b"220 2.0.0 Ready to start TLS")
    tls = _client_ctx().wrap_socket(raw, server_hostname="mx.example")
    tls.sendall(b"NOOP\r\n")
    answer = tls.recv(4096)
    # The first reply inside TLS answers NOOP, not the injected RSET.
    assert answer == b"250 2.0.0 Ok\r\n", answer
    tls.sendall(b"QUIT\r\n")
    tls.recv(4096)
    tls.close()


def test_ecdsa_certificate_is_served(inst):
    ctx = _client_ctx()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as s:
        s.ehlo("c")
        s.starttls(context=ctx)
        assert s.sock.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"


def test_encrypt_level_and_wrappermode(tmp_path):
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    write_key_and_cert(str(key), str(cert), "mx.example")
    master_cf = None
    with Instance(tmp_path, main_cf={"smtpd_tls_security_level": "encrypt", "alias_maps": "",
                                     "smtpd_tls_cert_file": str(cert),
                                     "smtpd_tls_key_file": str(key)}) as inst:
        text = (inst.config_dir / "master.cf").read_text()
        text += (f"127.0.0.1:{inst.smtps_port} inet n - n - - smtpd\n"
                 "  -o smtpd_tls_wrappermode=yes\n")
        inst.write_master_cf(text)
        inst.start()
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as s:
            s.ehlo("c")
            code, text = s.mail("a@x")
            assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
        with smtplib.SMTP_SSL("127.0.0.1", inst.smtps_port, timeout=20,
                              context=_client_ctx()) as s:
            code, caps = s.ehlo("c")
            assert code == 250 and b"STARTTLS" not in caps
            assert s.mail("a@x")[0] == 250
    assert master_cf is None
