"""Log lines: Postfix's format, escaping, delay formatting, each kind of line."""

import os
import socket
import subprocess
import sys
import time

import pytest

from pfy import log
from tests.conftest import pfy_bin

NOW = time.mktime((2023, 11, 2, 10, 15, 1, 0, 0, -1))


@pytest.fixture(autouse=True)
def restore_logging_state():
    """init_logging changes process-wide state (the logger, the stdlib
    bridge): put it back so other test modules see a pristine logger."""
    import logging
    root = logging.getLogger("pfy")
    saved = (list(root.handlers), root.propagate, root.level)
    yield
    log.logger.close()
    log.logger.__init__()
    root.handlers[:], root.propagate = saved[0], saved[1]
    root.setLevel(saved[2])


@pytest.fixture
def logfile(tmp_path):
    path = tmp_path / "maillog"
    log.init_logging("smtpd", maillog_file=str(path), hostname="mx.example.com")
    log.logger.clock = lambda: NOW
    yield path
    log.logger.clock = time.time
    log.logger.close()


def lines(path):
    prefix = f"Nov 02 10:15:01 mx postfix/smtpd[{os.getpid()}]: "
    out = []
    for line in path.read_text().splitlines():
        assert line.startswith(prefix), f"got {line!r} want prefix {prefix!r}"
        out.append(line[len(prefix):])
    return out


@pytest.mark.parametrize("call, want", [
    (lambda: log.log_delivery("3F2A81C0B1", "b@y", "", "local", 0.4, (0.1, 0, 0.2, 0.1),
                              "2.0.0", "sent", "delivered to mailbox"),
     "3F2A81C0B1: to=<b@y>, relay=local, delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, "
     "status=sent (delivered to mailbox)"),
    (lambda: log.log_delivery("3F2A81C0B1", "b@y", "alias@y", "mx.y[198.51.100.3]:25", 12.4,
                              (0.004, 0.01, 1.5, 10.9), "4.4.1", "deferred", "connect timed out", 2),
     "3F2A81C0B1: to=<b@y>, orig_to=<alias@y>, relay=mx.y[198.51.100.3]:25, conn_use=2, "
     "delay=12, delays=0/0.01/1.5/11, dsn=4.4.1, status=deferred (connect timed out)"),
    (lambda: log.log_delivery("A", "b@y", "B@Y", "local", 0, (0, 0, 0, 0), "2.0.0", "sent", "x"),
     "A: to=<b@y>, relay=local, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (x)"),
    (lambda: log.log_qmgr_from("3F2A81C0B1", "a@x", 1042, 1),
     "3F2A81C0B1: from=<a@x>, size=1042, nrcpt=1 (queue active)"),
    (lambda: log.log_removed("3F2A81C0B1"), "3F2A81C0B1: removed"),
    (lambda: log.log_message_id("3F2A81C0B1", "<1@x>"), "3F2A81C0B1: message-id=<1@x>"),
    (lambda: log.log_message_id("3F2A81C0B1", "<1@x>", resent=True),
     "3F2A81C0B1: resent-message-id=<1@x>"),
    (lambda: log.log_pickup("3F2A81C0B1", 0, "root"), "3F2A81C0B1: uid=0 from=<root>"),
    (lambda: log.log_pickup("3F2A81C0B1", 0, "root", "4B3C2D1E0F"),
     "3F2A81C0B1: uid=0 from=<root> orig_id=4B3C2D1E0F"),
    (lambda: log.log_client("3F2A81C0B1", "localhost[127.0.0.1]"),
     "3F2A81C0B1: client=localhost[127.0.0.1]"),
    (lambda: log.log_connect("mx.example[192.0.2.7]"), "connect from mx.example[192.0.2.7]"),
    (lambda: log.log_disconnect("mx.example[192.0.2.7]", "ehlo=1 quit=1 commands=2"),
     "disconnect from mx.example[192.0.2.7] ehlo=1 quit=1 commands=2"),
    (lambda: log.log_expired("3F2A81C0B1", "a@x"),
     "3F2A81C0B1: from=<a@x>, status=expired, returned to sender"),
    (lambda: log.log_noqueue_reject("RCPT", "mx.example[192.0.2.7]",
                                    "554 5.7.1 <b@y>: Relay access denied", "a@x", "b@y",
                                    "ESMTP", "mx.example"),
     "NOQUEUE: reject: RCPT from mx.example[192.0.2.7]: 554 5.7.1 <b@y>: Relay access denied; "
     "from=<a@x> to=<b@y> proto=ESMTP helo=<mx.example>"),
    (lambda: log.log_queue_id_line("3F2A81C0B1", "sender non-delivery notification: 4B2C"),
     "3F2A81C0B1: sender non-delivery notification: 4B2C"),
    (lambda: log.warning("hostname %s does not resolve", "mx.example"),
     "warning: hostname mx.example does not resolve"),
    (lambda: log.error("oops"), "error: oops"),
    (lambda: log.logger.critical("bad"), "fatal: bad"),
])
def test_line(logfile, call, want):
    call()
    assert lines(logfile) == [want]


@pytest.mark.parametrize("seconds, want", [
    (0, "0"), (0.0001, "0"), (0.004, "0"), (0.005, "0.01"), (0.02, "0.02"),
    (0.123, "0.12"), (0.4, "0.4"), (0.999, "1"), (1.234, "1.2"), (9.94, "9.9"),
    (9.99, "10"), (12.4, "12"), (100.6, "101"), (-1, "0"),
])
def test_format_delay_matches_postfix_format_tv(seconds, want):
    assert log.format_delay(seconds) == want


def test_client_text_cannot_forge_lines(logfile):
    log.log_connect("evil\r\nNov 02 10:15:01 mx postfix/smtpd[1]: fake[\x1b[31m\udcff]")
    [line] = lines(logfile)
    assert "\n" not in line and "\x1b" not in line and "\r" not in line
    assert line.startswith("connect from evil??Nov 02")


def test_utf8_is_kept(logfile):
    log.info("to=<jöran@exämple>")
    assert lines(logfile) == ["to=<jöran@exämple>"]


def test_long_text_is_cut_at_2000(logfile):
    log.info("x" * 5000)
    assert lines(logfile) == ["x" * 2000]


def test_fatal_exits_1_panic_exits_2(logfile):
    with pytest.raises(SystemExit) as e:
        log.fatal("bad config: main.cf line 3")
    assert e.value.code == 1
    try:
        raise ValueError("boom")
    except ValueError:
        with pytest.raises(SystemExit) as e:
            log.panic("unexpected exception")
    assert e.value.code == 2
    got = lines(logfile)
    assert got[0] == "fatal: bad config: main.cf line 3"
    assert got[-1] == "panic: unexpected exception"
    assert any("ValueError: boom" in x for x in got)


def test_many_processes_append_whole_lines(tmp_path):
    path = tmp_path / "maillog"
    code = ("import sys; from pfy import log; "
            "log.init_logging('w', maillog_file=sys.argv[1], hostname='h'); "
            "[log.info('x' * 500 + ' %d' % i) for i in range(300)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)]) for _ in range(4)]
    assert all(p.wait(60) == 0 for p in procs)
    got = path.read_text().splitlines()
    assert len(got) == 1200
    assert all(line.split(": ", 1)[1].startswith("x" * 500) for line in got)


def test_syslog_datagram_format(tmp_path):
    path = str(tmp_path / "devlog")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    log.init_logging("qmgr", syslog_socket=path, syslog_facility="local3")
    log.logger.clock = lambda: NOW
    try:
        log.warning("w")
        data = srv.recv(4096).decode()
    finally:
        log.logger.clock = time.time
        log.logger.close()
        srv.close()
    # <PRI> = local3 (19) * 8 + warning (4); RFC 3164 space-padded day.
    assert data == f"<156>Nov  2 10:15:01 postfix/qmgr[{os.getpid()}]: warning: w"


def test_unwritable_maillog_goes_to_postlog_socket(tmp_path):
    sock_path = str(tmp_path / "postlog")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    log.init_logging("sendmail", maillog_file=str(tmp_path / "no" / "such" / "file"),
                     hostname="h", postlog_socket=sock_path)
    try:
        log.info("hello")
        data = srv.recv(4096).decode()
    finally:
        log.logger.close()
        srv.close()
    assert data.endswith(f" h postfix/sendmail[{os.getpid()}]: hello\n")


def test_config_object(tmp_path):
    class Cfg:
        syslog_name = "pfy-test"
        syslog_facility = "mail"
        maillog_file = str(tmp_path / "m")
        myhostname = "box.example"
        queue_directory = str(tmp_path)

        @property
        def postlog_service_name(self):
            raise KeyError("undeclared")     # tolerated: default used
    log.init_logging(Cfg(), "cleanup")
    log.info("hi")
    log.logger.close()
    assert (tmp_path / "m").read_text().endswith(f" box pfy-test/cleanup[{os.getpid()}]: hi\n")


# -- postlog(1) ------------------------------------------------------------------

def run_postlog(tmp_path, *args, stdin=""):
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    logf = tmp_path / "maillog"
    (conf / "main.cf").write_text(f"maillog_file = {logf}\nmyhostname = mx.example.com\n")
    p = subprocess.run([pfy_bin("postlog"), "-c", str(conf), *args], input=stdin,
                       capture_output=True, text=True, timeout=60)
    text = logf.read_text() if logf.exists() else ""
    return p, [line.split("]: ", 1)[1] for line in text.splitlines()], text


def test_postlog_args_and_tag(tmp_path):
    p, got, text = run_postlog(tmp_path, "-t", "mytag", "-p", "warn", "hello", "there")
    assert p.returncode == 0 and got == ["warning: hello there"]
    assert " mx mytag[" in text


def test_postlog_stdin_lines(tmp_path):
    p, got, text = run_postlog(tmp_path, "-i", stdin="one\ntw\x01o\n")
    assert p.returncode == 0 and got == ["one", "tw?o"]
    assert " postfix/postlog[" in text


def test_postlog_fatal_priority_still_exits_0(tmp_path):
    p, got, _ = run_postlog(tmp_path, "-p", "fatal", "dead")
    assert p.returncode == 0 and got == ["fatal: dead"]


@pytest.mark.parametrize("args, want", [
    (["-p", "bogus", "x"], "postlog: fatal: unknown priority value: bogus"),
    (["-q"], "postlog: fatal: option -q not recognized"),
])
def test_postlog_bad_usage(tmp_path, args, want):
    p, got, _ = run_postlog(tmp_path, *args)
    assert p.returncode == 1 and p.stderr.startswith(want) and "Traceback" not in p.stderr
