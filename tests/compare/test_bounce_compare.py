"""A pfy non-delivery report against one from Debian's Postfix, same failure.

A private Postfix instance (its own config and queue in a temp folder, no
syslog: maillog_file through postlogd, loopback only) bounces mail to
example.net with `error:5.1.1 no such user` and delivers the report to the
sender's Maildir through virtual(8).  pfy's bounce daemon reports the same
failure (the same logfile record error(8) would write) on a prepared queue
file.  Both must have the same MIME structure, the same top-level header
set and the same delivery-status fields and values (up to host names, queue
IDs and dates).
"""

import email
import email.policy
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from tests.conftest import needs_root, postfix_bin
from tests.proc.test_bounce_daemon import Site

from pfy.dsn.logfile import StatusRecord
from pfy.ipc.bounce_client import NoticeRequest, append_logfile


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv, **kw):
    env = dict(os.environ)
    env.pop("MAIL_CONFIG", None)
    return subprocess.run(argv, capture_output=True, env=env, timeout=60, **kw)


@pytest.fixture(scope="module")
def postfix_bounce():
    """The bounce Debian's Postfix sends for mail to a failing transport."""
    needs_root()
    postfix = postfix_bin("postfix")
    if not os.path.exists("/etc/postfix/master.cf") and not os.path.exists(
            "/usr/share/postfix/master.cf.dist"):
        pytest.skip("no Postfix master.cf to start from")
    root = tempfile.mkdtemp(prefix="pfy-bc-", dir="/tmp")
    os.chmod(root, 0o755)
    conf = os.path.join(root, "conf")
    os.mkdir(conf)
    vmail = os.path.join(root, "vmail")
    os.makedirs(vmail)
    os.chown(vmail, 65534, 65534)
    import pwd
    try:
        pf = pwd.getpwnam("postfix")
    except KeyError:
        pytest.skip("no postfix user (Debian's postfix package not installed)")
    os.mkdir(os.path.join(root, "queue"))
    os.mkdir(os.path.join(root, "data"))
    os.chown(os.path.join(root, "data"), pf.pw_uid, pf.pw_gid)
    port = _free_port()
    with open(os.path.join(conf, "main.cf"), "w") as f:
        f.write(f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pfx.example.com
mydestination =
relayhost =
transport_maps = texthash:{conf}/transport
virtual_mailbox_domains = sender.example
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = inline:{{alice@sender.example=alice/}}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
""")
    with open(os.path.join(conf, "transport"), "w") as f:
        f.write("example.net error:5.1.1 no such user\n")
    src = ("/etc/postfix/master.cf" if os.path.exists("/etc/postfix/master.cf")
           else "/usr/share/postfix/master.cf.dist")
    lines = []
    for line in open(src):
        if line.startswith("smtp ") and " inet " in line:
            line = f"127.0.0.1:{port} inet n - n - - smtpd\n"
        lines.append(line)
    if not any(line.startswith("postlog ") for line in lines):
        lines.append("postlog unix-dgram n - n - 1 postlogd\n")
    with open(os.path.join(conf, "master.cf"), "w") as f:
        f.writelines(lines)
    started = _run([postfix, "-c", conf, "start"])
    if started.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        log = open(os.path.join(root, "maillog")).read() if os.path.exists(
            os.path.join(root, "maillog")) else ""
        pytest.skip(f"private Postfix did not start: {started.stderr.decode()[-300:]} {log[-500:]}")
    try:
        sent = _run([postfix_bin("sendmail"), "-C", conf, "-f", "alice@sender.example",
                     "bob@example.net"],
                    input=b"From: alice@sender.example\nTo: bob@example.net\n"
                          b"Subject: test message\nMessage-Id: <m1@sender.example>\n\nhello\nworld\n")
        assert sent.returncode == 0, sent.stderr
        deadline = time.time() + 30
        files = []
        while time.time() < deadline and not files:
            files = glob.glob(os.path.join(vmail, "alice", "new", "*"))
            time.sleep(0.2)
        log = open(os.path.join(root, "maillog")).read() if os.path.exists(
            os.path.join(root, "maillog")) else ""
        assert files, f"no bounce delivered; Postfix log:\n{log}"
        with open(files[0], "rb") as f:
            raw = f.read()
        yield raw, log
    finally:
        _run([postfix, "-c", conf, "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pfy_bounce(tmp_path):
    """pfy's report for the same failure, as error(8) + qmgr would log it."""
    s = Site(tmp_path)
    try:
        qid, offs = s.message(sender="alice@sender.example", body=[
            b"From: alice@sender.example", b"To: bob@example.net", b"Subject: test message",
            b"Message-Id: <m1@sender.example>", b"", b"hello", b"world"])
        append_logfile(s.queue, "bounce", qid, [StatusRecord(
            "bob@example.net", "5.1.1", "failed", "no such user",
            orig_rcpt="bob@example.net", offset=offs[0],
            # Postfix's sendmail/cleanup record an ORCPT for every recipient.
            dsn_orcpt="rfc822;bob@example.net")])
        # Postfix's sendmail submits as 8BITMIME: the queue file says
        # encoding=8bit, and qmgr passes that on.
        assert s.client.flush(NoticeRequest("active", qid, "alice@sender.example",
                                            encoding="8bit"))
        [entry] = s.queue.ready_files("incoming")
        with s.queue.open(entry) as r:
            raw = b"\n".join(r.content_lines()) + b"\n"
        yield raw, s.log()
    finally:
        s.close()


# Headers that a delivery agent or the receiving side adds (Postfix's copy
# went through virtual(8), ours is still in the queue) and per-message values.
_DELIVERY_HEADERS = {"return-path", "delivered-to", "x-original-to"}


def _parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _shape(msg):
    out = [msg.get_content_type()]
    for p in msg.get_payload():
        out.append((p.get_content_type(), p.get("Content-Description"),
                    p.get_param("charset")))
    return out


def test_same_mime_structure(postfix_bounce, pfy_bounce):
    theirs, ours = _parse(postfix_bounce[0]), _parse(pfy_bounce[0])
    assert _shape(ours) == _shape(theirs), f"got {_shape(ours)} want {_shape(theirs)}"
    assert ours.get_param("report-type") == theirs.get_param("report-type") == "delivery-status"


def test_same_header_set(postfix_bounce, pfy_bounce):
    theirs, ours = _parse(postfix_bounce[0]), _parse(pfy_bounce[0])
    names = lambda m: sorted({k.lower() for k in m.keys()} - _DELIVERY_HEADERS)
    assert names(ours) == names(theirs), f"got {names(ours)} want {names(theirs)}"
    for h in ("Subject", "Auto-Submitted", "MIME-Version"):
        assert ours[h] == theirs[h], h
    # From: the same display name and local part; the host differs.
    assert ours["From"].replace("host.example.com", "H") == \
        theirs["From"].replace("pfx.example.com", "H")
    assert ours["To"].split("@")[0] == theirs["To"].split("@")[0]


def _fields(msg):
    blocks = msg.get_payload(1).get_payload()
    return [[(k, v) for k, v in b.items()] for b in blocks]


def _normalize(fields):
    subst = {"pfx.example.com": "HOST", "host.example.com": "HOST"}
    out = []
    for block in fields:
        nb = []
        for k, v in block:
            if k in ("X-Postfix-Queue-ID", "Arrival-Date"):
                v = "*"
            for a, b in subst.items():
                v = v.replace(a, b)
            nb.append((k, v))
        out.append(nb)
    return out


def test_same_delivery_status_fields(postfix_bounce, pfy_bounce):
    theirs, ours = _normalize(_fields(_parse(postfix_bounce[0]))), \
        _normalize(_fields(_parse(pfy_bounce[0])))
    assert ours == theirs, f"got {ours}\nwant {theirs}"


def test_same_human_readable_text(postfix_bounce, pfy_bounce):
    theirs = _parse(postfix_bounce[0]).get_payload(0).get_payload()
    ours = _parse(pfy_bounce[0]).get_payload(0).get_payload()
    assert ours.replace("host.example.com", "HOST") == theirs.replace("pfx.example.com", "HOST")


def test_same_returned_message_headers(postfix_bounce, pfy_bounce):
    theirs = _parse(postfix_bounce[0]).get_payload(2).get_payload(0)
    ours = _parse(pfy_bounce[0]).get_payload(2).get_payload(0)
    for h in ("Return-Path", "Subject", "Message-Id", "From", "To"):
        assert ours[h] == theirs[h], h
    assert ours.get_payload() == theirs.get_payload()


def test_same_notification_log_line(postfix_bounce, pfy_bounce):
    import re
    pat = re.compile(r"postfix/bounce\[\d+\]: [0-9A-F]+: sender non-delivery notification: [0-9A-F]+$",
                     re.M)
    assert pat.search(postfix_bounce[1]), postfix_bounce[1]
    assert pat.search(pfy_bounce[1]), pfy_bounce[1]
