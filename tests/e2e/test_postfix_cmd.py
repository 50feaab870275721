"""The postfix command: start on a fresh folder, status, stop, check's
error messages (file and line), and Postfix's postfix-script wording."""

import os
import subprocess
import sys
import textwrap

from instance import Instance, free_port

BIN = os.path.join(os.path.dirname(sys.executable), "postfix")


def postfix(config_dir, *args):
    return subprocess.run([BIN, "-c", str(config_dir), *args], capture_output=True,
                          text=True, timeout=60)


def test_fresh_folder_with_only_main_cf_starts_with_shipped_master_cf(tmp_path):
    # Only main.cf: check creates the queue and data folders, and master.cf
    # comes from the shipped one (start needs port 25, so test_master_* use
    # their own master.cf for start).
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(textwrap.dedent(f"""\
        queue_directory = {tmp_path}/queue
        data_directory = {tmp_path}/data
        maillog_file = {tmp_path}/maillog
        inet_interfaces = loopback-only
    """))
    os.chmod(tmp_path, 0o755)
    r = postfix(conf, "status")
    assert r.returncode == 1
    assert r.stderr == "postfix/postfix-script: the Postfix mail system is not running\n"
    r = postfix(conf, "check")
    assert r.returncode == 0, r.stderr
    for name in ("incoming", "active", "deferred", "maildrop", "public", "private", "pid"):
        assert (tmp_path / "queue" / name).is_dir()
    assert (tmp_path / "data").is_dir()
    assert not (conf / "master.cf").exists()


def test_start_status_stop_wording(tmp_path):
    port = free_port()
    with Instance(tmp_path, master_cf=f"127.0.0.1:{port} inet n - n - 1 /bin/false\n") as inst:
        r = inst.postfix("start")
        assert "postfix/postfix-script: starting the Postfix mail system" in r.stderr
        r = inst.postfix("status")
        pid = inst.master_pid()
        assert r.stderr == f"postfix/postfix-script: the Postfix mail system is running: PID: {pid}\n"
        r = inst.postfix("reload")
        assert r.stderr == "postfix/postfix-script: refreshing the Postfix mail system\n"
        r = inst.postfix("stop")
        assert "postfix/postfix-script: stopping the Postfix mail system" in r.stderr
        r = inst.postfix("stop", check=False)
        assert r.returncode == 1
        assert r.stderr == "postfix/postfix-script: fatal: the Postfix mail system is not running\n"


def test_bad_main_cf_names_file_and_line(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(f"queue_directory = {tmp_path}/q\nthis is not a setting\n")
    r = postfix(conf, "check")
    assert r.returncode == 1
    line = r.stderr.strip()
    assert line.startswith("postfix: fatal: ") and str(conf / "main.cf") in line and "2" in line, line
    assert "Traceback" not in r.stderr and "\n" not in line


def test_bad_master_cf_names_file_and_line(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(f"queue_directory = {tmp_path}/q\ndata_directory = {tmp_path}/d\n")
    (conf / "master.cf").write_text("# comment\nsmtp inet n - n - - smtpd\nbroken line\n")
    r = postfix(conf, "start")
    assert r.returncode == 1
    line = r.stderr.strip()
    assert line.startswith("postfix: fatal: ") and str(conf / "master.cf") in line and "3" in line, line
    assert "Traceback" not in r.stderr


def test_usage_errors(tmp_path):
    r = subprocess.run([BIN, "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "unknown command: 'frobnicate'" in r.stderr
    r = subprocess.run([BIN], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("usage: postfix")
