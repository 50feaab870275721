"""postfix tls enable-server / new-server-key: a new instance gets a
self-signed key and certificate, and smtpd offers STARTTLS with them."""

import os
import smtplib
import ssl
import subprocess

from tests.conftest import pfy_bin
from instance import Instance


def run_postfix(config_dir, *args):
    return subprocess.run([pfy_bin("postfix"), "-c", str(config_dir), *args],
                          capture_output=True, text=True, timeout=60)


def test_enable_server_makes_a_certificate_that_smtpd_serves(tmp_path):
    with Instance(tmp_path / "inst", main_cf={"myhostname": "tls.example"}) as inst:
        r = run_postfix(inst.config_dir, "tls", "enable-server")
        assert r.returncode == 0, r.stderr
        main_cf = (inst.config_dir / "main.cf").read_text()
        assert "smtpd_tls_security_level = may" in main_cf
        key = next(inst.config_dir.glob("key-rsa-*.pem"))
        assert os.stat(key).st_mode & 0o077 == 0, "the private key must not be readable by others"
        inst.start()
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
            s.ehlo("client.example")
            assert s.has_extn("starttls")
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx)
            cert = s.sock.getpeercert(binary_form=True)
            assert cert
        # A second enable-server leaves the configured certificate alone.
        r = run_postfix(inst.config_dir, "tls", "enable-server")
        assert r.returncode == 0 and "already configured" in r.stderr
        assert len(list(inst.config_dir.glob("key-rsa-*.pem"))) == 1


def test_new_server_key_prints_the_deploy_command(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text("myhostname = tls.example\n")
    r = run_postfix(conf, "tls", "new-server-key", "-e")
    assert r.returncode == 0, r.stderr
    assert "smtpd_tls_cert_file = " in r.stdout
    assert list(conf.glob("cert-ecdsa-*.pem"))
    assert (conf / "main.cf").read_text() == "myhostname = tls.example\n"


def test_bad_usage_is_one_line_and_exit_1(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text("")
    r = run_postfix(conf, "tls", "bogus")
    assert r.returncode == 1
    assert "usage: postfix tls" in r.stderr and "Traceback" not in r.stderr
