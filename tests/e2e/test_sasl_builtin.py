"""SMTP AUTH end to end through the built-in user table (smtpd_sasl_type =
pfy, users managed with pfy-saslpasswd): PLAIN and LOGIN with smtplib and
swaks over STARTTLS with smtpd_tls_auth_only, the wrong password refused and
counted, and no AUTH data in the log."""

from __future__ import annotations

import base64
import shutil
import smtplib
import ssl
import subprocess

import pytest

from instance import Instance
from pfy.tls.certs import write_key_and_cert
from tests.conftest import pfy_bin

PASSWORD = "c0rrect-h0rse"
WRONG = "wr0ng-batt3ry"


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    root = tmp_path_factory.mktemp("sasl")
    key, cert = root / "key.pem", root / "cert.pem"
    write_key_and_cert(str(key), str(cert), "mx.example")
    with Instance(root, main_cf={
            "myhostname": "mx.example", "alias_maps": "", "mydestination": "mx.example, localhost",
            "mynetworks": "127.0.0.2/32",          # we are NOT in mynetworks: AUTH is how we relay
            "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key),
            "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "pfy",
            "smtpd_tls_auth_only": "yes", "smtpd_sasl_authenticated_header": "yes",
            # No DATA is ever sent to the relayed recipient: nothing leaves.
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination"}) as inst:
        subprocess.run([pfy_bin("pfy-saslpasswd"), "-c", str(inst.config_dir), "-p",
                        "alice@example.com"], input=PASSWORD.encode(), check=True)
        inst.start()
        yield inst


def test_auth_not_offered_before_tls(inst):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as s:
        s.ehlo("c.example")
        assert not s.has_extn("auth")
        code, text = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0a\0b").decode())
        assert code == 538, text


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_over_starttls_and_relay(inst, mech):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as s:
        s.ehlo("c.example")
        s.starttls(context=_client_ctx())
        s.ehlo("c.example")
        assert set(s.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        s.user, s.password = "alice@example.com", PASSWORD
        code, text = s.auth(mech, getattr(s, "auth_" + mech.lower()),
                            initial_response_ok=(mech == "PLAIN"))
        assert (code, text) == (235, b"2.7.0 Authentication successful")
        code, _ = s.mail("alice@example.com")
        assert code == 250
        code, text = s.rcpt("someone@elsewhere.example")      # relaying: allowed after AUTH
        assert code == 250, text
        s.rset()
    inst.wait_for_log(rf"sasl_method={mech}, sasl_username=alice@example\.com")


def test_wrong_password(inst):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as s:
        s.ehlo("c.example")
        s.starttls(context=_client_ctx())
        s.ehlo("c.example")
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("alice@example.com", WRONG)
        assert e.value.smtp_code == 535
        assert e.value.smtp_error == b"5.7.8 Error: authentication failed: authentication failure"
        s.mail("alice@example.com")
        code, text = s.rcpt("someone@elsewhere.example")
        assert code == 554, text                   # not authenticated: no relaying
    inst.wait_for_log(r"SASL (PLAIN|LOGIN) authentication failed: authentication failure, "
                      r"sasl_username=alice@example\.com")
    # counted as an error in the session statistics: auth=0/N
    inst.wait_for_log(r"disconnect from .* auth=0/\d")


def test_no_auth_data_in_the_log(inst):
    test_wrong_password(inst)
    log = inst.log()
    for secret in (PASSWORD, WRONG):
        assert secret not in log
        for blob in (f"\0alice@example.com\0{secret}", secret):
            assert base64.b64encode(blob.encode()).decode() not in log


def test_swaks_auth(inst):
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed (tools/test installs the swaks package)")
    for mech in ("PLAIN", "LOGIN"):
        r = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(inst.smtp_port),
                            "--tls", "--auth", mech, "--auth-user", "alice@example.com",
                            "--auth-password", PASSWORD, "--from", "alice@example.com",
                            "--to", "root@mx.example", "--ehlo", "c.example", "--timeout", "20"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "235 2.7.0 Authentication successful" in r.stdout
