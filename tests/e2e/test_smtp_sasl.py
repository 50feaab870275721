"""smtp(8) SASL client to a smarthost, end to end.

The smarthost is a pfy instance with the built-in SASL table
(smtpd_sasl_type = pfy, users made with pfy-saslpasswd), STARTTLS, AUTH
offered before TLS too (smtpd_tls_auth_only = no, so that the client's own
refusal to send a password in the clear is what is tested), relaying only
for authenticated clients (it is not in the smarthost's mynetworks), and
the relayed mail discarded.

The sender is a second pfy instance: relayhost = [127.0.0.1]:PORT for
remote.example, transport_maps sending other test domains through extra
master.cf smtp services whose -o settings vary one thing each:

    remote.example   relayhost, TLS may      password by "[127.0.0.1]:PORT", over TLS
    dep.example      senderauth service      smtp_sender_dependent_authentication:
                                              bob@pfy.example's own password
    host.example     hostkey service         [smarthost.test]:PORT (loopback DNS),
                                              password by host name
    login.example    loginonly service       smtp_sasl_mechanism_filter = login
    notls.example    plainnotls service      no TLS, default security options
                                              (noplaintext): no password sent, deferred
    plainok.example  plainok service         no TLS, smtp_sasl_security_options =
                                              noanonymous: AUTH PLAIN in the clear
    wrong.example    wrongpw service         a wrong password: deferred with the
                                              smarthost's 535 quoted
"""

from __future__ import annotations

import re
import subprocess

import pytest

from instance import Instance
from pfy.tls.certs import write_key_and_cert
from tests.conftest import pfy_bin
from tests.dnsserver import DnsServer

USERS = {"alice@example.com": "alice-pw-1", "bob@example.com": "bob-pw-2",
         "carol@example.com": "carol-pw-3"}

SERVICES = """
senderauth unix - - y - - smtp -o smtp_sender_dependent_authentication=yes
hostkey    unix - - y - - smtp
loginonly  unix - - y - - smtp -o smtp_sasl_mechanism_filter=login
plainnotls unix - - y - - smtp -o smtp_tls_security_level=none
plainok    unix - - y - - smtp -o smtp_tls_security_level=none -o smtp_sasl_security_options=noanonymous
wrongpw    unix - - y - - smtp -o smtp_sasl_password_maps=inline:{{[127.0.0.1]:{port}=alice@example.com:nope}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("smtpsasl")
    key, cert = root / "key.pem", root / "cert.pem"
    write_key_and_cert(str(key), str(cert), "smarthost.example")
    with Instance(root / "smarthost", main_cf={
            "myhostname": "smarthost.example", "alias_maps": "",
            "mydestination": "smarthost.example",
            "mynetworks": "127.0.0.2/32",           # not us: AUTH is how we relay
            "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key), "smtpd_tls_auth_only": "no",
            "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "pfy",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
            "default_transport": "discard:smarthost", "relay_transport": "discard:smarthost",
            }) as smarthost:
        for user, pw in USERS.items():
            subprocess.run([pfy_bin("pfy-saslpasswd"), "-c", str(smarthost.config_dir), "-p", user],
                           input=pw.encode(), check=True)
        smarthost.start()
        port = smarthost.smtp_port
        passwd = root / "sasl_passwd"
        passwd.write_text(f"[127.0.0.1]:{port} alice@example.com:{USERS['alice@example.com']}\n"
                          f"bob@pfy.example bob@example.com:{USERS['bob@example.com']}\n"
                          f"smarthost.test carol@example.com:{USERS['carol@example.com']}\n")
        transport = root / "transport"
        transport.write_text(f"dep.example senderauth:[127.0.0.1]:{port}\n"
                             f"host.example hostkey:[smarthost.test]:{port}\n"
                             f"login.example loginonly:[127.0.0.1]:{port}\n"
                             f"notls.example plainnotls:[127.0.0.1]:{port}\n"
                             f"plainok.example plainok:[127.0.0.1]:{port}\n"
                             f"wrong.example wrongpw:[127.0.0.1]:{port}\n")
        with pytest.MonkeyPatch.context() as mp, \
                DnsServer({"smarthost.test": {"A": ["127.0.0.1"]}}) as dns:
            mp.setenv("PFY_RESOLV_CONF", dns.resolv_conf)
            yield from _sender(root, port, passwd, transport, smarthost)


def _sender(root, port, passwd, transport, smarthost):
    with Instance(root / "sender", main_cf={
            "myhostname": "pfy.example", "relayhost": f"[127.0.0.1]:{port}",
            "transport_maps": f"texthash:{transport}",
            "smtp_tls_security_level": "may",
            "smtp_sasl_auth_enable": "yes",
            "smtp_sasl_password_maps": f"texthash:{passwd}",
            # A password only over TLS (the usual smarthost setup).
            "smtp_sasl_security_options": "noplaintext, noanonymous",
            "smtp_sasl_tls_security_options": "noanonymous",
            "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
            "queue_run_delay": "1s"}) as sender:
        mcf = sender.config_dir / "master.cf"
        mcf.write_text(mcf.read_text() + SERVICES.format(port=port))
        sender.start()
        for rcpt, frm in (("u@remote.example", "a@pfy.example"),
                          ("u@dep.example", "bob@pfy.example"),
                          ("u@host.example", "a@pfy.example"),
                          ("u@login.example", "a@pfy.example"),
                          ("u@notls.example", "a@pfy.example"),
                          ("u@plainok.example", "a@pfy.example"),
                          ("u@wrong.example", "a@pfy.example")):
            p = sender.command("sendmail", "-f", frm, rcpt, input=b"Subject: sasl\n\nhello\n")
            assert p.returncode == 0, p.stderr
        yield sender, smarthost


def _smarthost_client_line(smarthost, rcpt_domain: str) -> str:
    """The smarthost's "client=" line of the message for rcpt_domain
    (queue ID from its discard line)."""
    line = smarthost.wait_for_log(rf"to=<u@{re.escape(rcpt_domain)}>.*status=sent", timeout=20)[0]
    qid = re.search(r": (\w+): to=", line).group(1)
    return smarthost.wait_for_log(rf"{qid}: client=")[0]


def test_relayhost_auth_over_tls(world):
    sender, smarthost = world
    sent = sender.wait_for_log(r"to=<u@remote\.example>.*status=sent", timeout=20)[0]
    assert f"relay=127.0.0.1[127.0.0.1]:{smarthost.smtp_port}" in sent
    client = _smarthost_client_line(smarthost, "remote.example")
    assert "sasl_method=PLAIN, sasl_username=alice@example.com" in client
    sender.wait_for_log(r"Untrusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]")


def test_sender_dependent_password(world):
    sender, smarthost = world
    sender.wait_for_log(r"to=<u@dep\.example>.*status=sent", timeout=20)
    assert "sasl_username=bob@example.com" in _smarthost_client_line(smarthost, "dep.example")


def test_password_by_host_name(world):
    sender, smarthost = world
    sent = sender.wait_for_log(r"to=<u@host\.example>.*status=sent", timeout=20)[0]
    assert "relay=smarthost.test[127.0.0.1]" in sent
    assert "sasl_username=carol@example.com" in _smarthost_client_line(smarthost, "host.example")


def test_mechanism_filter(world):
    sender, smarthost = world
    sender.wait_for_log(r"to=<u@login\.example>.*status=sent", timeout=20)
    assert "sasl_method=LOGIN, sasl_username=alice@example.com" in \
        _smarthost_client_line(smarthost, "login.example")


def test_no_password_in_plaintext_by_default(world):
    sender, smarthost = world
    line = sender.wait_for_log(r"to=<u@notls\.example>.*status=deferred", timeout=20)[0]
    assert "SASL authentication failed; cannot authenticate to server " \
           "127.0.0.1[127.0.0.1]: no mechanism available" in line
    # The smarthost never saw an AUTH command without TLS first.
    for ln in smarthost.log().splitlines():
        if "disconnect from" in ln and " auth=" in ln:
            assert "starttls=1" in ln, ln


def test_plaintext_password_when_allowed(world):
    sender, smarthost = world
    sender.wait_for_log(r"to=<u@plainok\.example>.*status=sent", timeout=20)
    assert "sasl_username=alice@example.com" in _smarthost_client_line(smarthost, "plainok.example")
    smarthost.wait_for_log(r"disconnect from \S+ ehlo=1 auth=1 mail=1")


def test_wrong_password_defers_with_reply_quoted(world):
    sender, smarthost = world
    line = sender.wait_for_log(r"to=<u@wrong\.example>.*status=deferred", timeout=20)[0]
    assert "SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8 " \
           "Error: authentication failed" in line
    assert "dsn=4.7.8" in line


def test_no_password_in_logs(world):
    sender, smarthost = world
    sender.wait_for_log(r"to=<u@wrong\.example>.*status=deferred", timeout=20)
    logs = sender.log() + smarthost.log()
    for pw in list(USERS.values()) + ["nope"]:
        assert pw not in logs
