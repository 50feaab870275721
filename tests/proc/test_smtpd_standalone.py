"""smtpd -S: the SMTP dialogue on stdin/stdout (sendmail -bs), and the
pieces of the daemon that need no other process."""

from __future__ import annotations

import subprocess
import sys

from pfy.daemons.smtpd.received import received_header
from pfy.server.paths import default_daemon_directory
from pfy.tls import TlsSettings, server_context, protocol_range, cipher_list
from pfy.tls.certs import write_key_and_cert
from pfy.tls.info import TlsInfo, fingerprint


def test_standalone_dialogue(tmp_path):
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\nmyhostname = mx.example\n"
                                      f"maillog_file = {tmp_path}/maillog\nalias_maps =\n")
    smtpd = f"{default_daemon_directory()}/smtpd"
    p = subprocess.Popen([sys.executable, smtpd, "-S"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                         env={"MAIL_CONFIG": str(tmp_path), "PATH": "/usr/bin:/bin"})
    out = p.stdout.readline()
    # One command at a time, as a client waits for each reply.
    for cmd, last in ((b"EHLO me", b"250 "), (b"NOOP", b"250 "), (b"QUIT", b"221 ")):
        p.stdin.write(cmd + b"\r\n")
        p.stdin.flush()
        while True:
            line = p.stdout.readline()
            out += line
            if not line or line.startswith(last):
                break
    p.stdin.close()
    p.wait(timeout=30)
    assert out.startswith(b"220 mx.example ESMTP Postfix\r\n"), out
    assert b"250-mx.example\r\n" in out and b"STARTTLS" not in out
    assert out.endswith(b"250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n")
    log = (tmp_path / "maillog").read_text()
    assert "connect from localhost[127.0.0.1]" in log
    assert "disconnect from localhost[127.0.0.1] ehlo=1 noop=1 quit=1 commands=3" in log


def test_received_header_shapes():
    tls = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256)
    lines = received_header(helo_name="helo.example", client_name="mx.example",
                            client_addr="192.0.2.7", myhostname="mail.example",
                            mail_name="Postfix", protocol="ESMTPSA", queue_id="3F2A81C0B1",
                            recipients=["bob@example.org"], arrival=0,
                            tls_lines=tls.received_comment(), sasl_username="alice")
    assert lines[:5] == [
        "Received: from helo.example (mx.example [192.0.2.7])",
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))",
        "\t(No client certificate requested)",
        "\t(Authenticated sender: alice)",
        "\tby mail.example (Postfix) with ESMTPSA id 3F2A81C0B1"]
    assert lines[5].startswith("\tfor <bob@example.org>; ")
    two = received_header(helo_name=None, client_name="unknown", client_addr="2001:db8::1",
                          myhostname="m", mail_name="Postfix", protocol="SMTP", queue_id="X",
                          recipients=["a@b", "c@d"], arrival=0)
    assert two[0] == "Received: from unknown (unknown [IPv6:2001:db8::1])"
    assert two[1] == "\tby m (Postfix) with SMTP id X;"


def test_tls_log_line_and_fingerprint():
    info = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256)
    assert info.log_line("h[1.2.3.4]") == ("Anonymous TLS connection established from h[1.2.3.4]: "
                                           "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")
    assert fingerprint(b"x", "sha256").count(":") == 31
    assert fingerprint(b"x", "md5") == "9D:D4:E4:61:26:8C:80:34:F5:C8:56:4E:15:5C:67:A6"


def test_protocols_and_grades(tmp_path):
    import ssl
    assert protocol_range(">=TLSv1.2") == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert protocol_range("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1") == (ssl.TLSVersion.TLSv1_2,
                                                                  ssl.TLSVersion.TLSv1_3)
    s = TlsSettings(ciphers="high", exclude_ciphers=("aNULL", "RC4"))
    assert cipher_list(s, False) == "aNULL:-aNULL:HIGH:@STRENGTH:!aNULL:!RC4"
    key, cert = tmp_path / "k", tmp_path / "c"
    write_key_and_cert(str(key), str(cert), "mx.example", key_type="ecdsa")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    ctx = server_context(TlsSettings(security_level="may", eccert_file=str(cert),
                                     eckey_file=str(key), protocols=(">=TLSv1.2",)))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
