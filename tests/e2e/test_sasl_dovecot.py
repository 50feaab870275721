"""SMTP AUTH end to end through Debian's Dovecot (smtpd_sasl_type =
dovecot): the test starts its own dovecot with a passwd-file database and
only a unix auth listener at $queue_directory/private/auth."""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import smtplib
import ssl
import subprocess
import time

import pytest

from instance import Instance
from pfy.tls.certs import write_key_and_cert

DOVECOT = "/usr/sbin/dovecot"
PASSWORD = "d0vec0t-pw"
WRONG = "n0t-the-pw"


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _dovecot_conf(root, socket_path: str, owner: str) -> str:
    run = root / "dovecot-run"
    run.mkdir(mode=0o755, exist_ok=True)
    (root / "dovecot-users").write_text(
        f"bob@example.com:{{PLAIN}}{PASSWORD}:65534:65534::/nonexistent::\n")
    user = pwd.getpwuid(os.geteuid()).pw_name
    # Run as whoever runs the tests; unprivileged, everything stays in root.
    return f"""
base_dir = {run}
state_dir = {root}/dovecot-state
log_path = {root}/dovecot.log
protocols = none
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {user}
default_login_user = {user}
default_internal_group = {pwd.getpwnam(user).pw_name}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/dovecot-users
}}
userdb {{
  driver = passwd-file
  args = {root}/dovecot-users
}}
service auth {{
  unix_listener {socket_path} {{
    mode = 0660
    user = {owner}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    if not os.path.exists(DOVECOT):
        pytest.skip("Debian's dovecot-core is not installed (tools/test installs it)")
    root = tmp_path_factory.mktemp("dovecot")
    key, cert = root / "key.pem", root / "cert.pem"
    write_key_and_cert(str(key), str(cert), "mx.example")
    with Instance(root, main_cf={
            "myhostname": "mx.example", "alias_maps": "", "mydestination": "mx.example, localhost",
            "mynetworks": "127.0.0.2/32",
            "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key), "smtpd_tls_auth_only": "yes",
            "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": "private/auth",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination"}) as inst:
        inst.start()
        private = inst.queue_dir / "private"
        owner = pwd.getpwuid(private.stat().st_uid).pw_name
        conf = root / "dovecot.conf"
        conf.write_text(_dovecot_conf(root, str(private / "auth"), owner))
        proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 15
            while not (private / "auth").exists():
                if proc.poll() is not None or time.time() > deadline:
                    log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
                    pytest.fail(f"dovecot did not start: {proc.stderr.read()!r} {log}")
                time.sleep(0.1)
            yield inst
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_dovecot_auth_over_starttls(inst, mech):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as s:
        s.ehlo("c.example")
        assert not s.has_extn("auth")                       # smtpd_tls_auth_only
        s.starttls(context=_client_ctx())
        s.ehlo("c.example")
        assert set(s.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        s.user, s.password = "bob@example.com", PASSWORD
        code, text = s.auth(mech, getattr(s, "auth_" + mech.lower()),
                            initial_response_ok=(mech == "PLAIN"))
        assert (code, text) == (235, b"2.7.0 Authentication successful")
        s.mail("bob@example.com")
        code, text = s.rcpt("x@elsewhere.example")
        assert code == 250, text
        s.rset()
    inst.wait_for_log(rf"sasl_method={mech}, sasl_username=bob@example\.com")


def test_dovecot_wrong_password(inst):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as s:
        s.ehlo("c.example")
        s.starttls(context=_client_ctx())
        s.ehlo("c.example")
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("bob@example.com", WRONG)
        assert e.value.smtp_code == 535
        assert e.value.smtp_error.startswith(b"5.7.8 Error: authentication failed: ")
    inst.wait_for_log(r"SASL (PLAIN|LOGIN) authentication failed: .*sasl_username=bob@example\.com")
    log = inst.log()
    for secret in (PASSWORD, WRONG):
        assert secret not in log
        assert base64.b64encode(secret.encode()).decode() not in log
        assert base64.b64encode(f"\0bob@example.com\0{secret}".encode()).decode() not in log


def test_swaks_through_dovecot(inst):
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed (tools/test installs the swaks package)")
    r = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(inst.smtp_port), "--tls",
                        "--auth", "PLAIN", "--auth-user", "bob@example.com",
                        "--auth-password", PASSWORD, "--from", "bob@example.com",
                        "--to", "root@mx.example", "--ehlo", "c.example", "--timeout", "20"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
