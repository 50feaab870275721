"""smtp(8) against a real Debian Postfix as the receiver.

pfy relays mail for pf.example to a private Postfix instance (transport_maps
-> [127.0.0.1]:PORT), which delivers it with its virtual(8) agent into
Maildirs.  Postfix rejects one address with its own words
(check_recipient_access ... REJECT); a message to that address and to a
good one is delivered to the good one and bounced for the other, and the
bounce -- sent back by pfy to the sender, who also lives on the Postfix
side -- quotes Postfix's reply.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sys
from pathlib import Path

import pytest

from instance import Instance
from tests.conftest import postfix_bin

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_relay import PostfixPeer  # noqa: E402

REJECT_TEXT = "go away, says Postfix"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    postfix_bin("postfix")
    if os.geteuid() != 0:
        pytest.skip("needs root: the Postfix peer runs its own master")
    root = tmp_path_factory.mktemp("topostfix")
    pw = pwd.getpwnam("postfix")
    vmail = root / "vmail"
    vmail.mkdir()
    shutil.chown(vmail, "postfix", "postfix")
    (root / "vmailbox").write_text("u@pf.example u/\nsender@pf.example sender/\n"
                                   "nobody@pf.example nobody/\n")
    (root / "rcpt_access").write_text(f"nobody@pf.example REJECT {REJECT_TEXT}\n")
    with PostfixPeer(root / "peer", {
            "myhostname": "peer.example",
            "virtual_mailbox_domains": "pf.example",
            "virtual_mailbox_base": vmail,
            "virtual_mailbox_maps": f"texthash:{root / 'vmailbox'}",
            "virtual_uid_maps": f"static:{pw.pw_uid}", "virtual_gid_maps": f"static:{pw.pw_gid}",
            "smtpd_recipient_restrictions":
                f"check_recipient_access texthash:{root / 'rcpt_access'}, "
                "permit_mynetworks, reject_unauth_destination"}) as peer:
        peer.start()
        (root / "transport").write_text(f"pf.example smtp:[127.0.0.1]:{peer.smtp_port}\n")
        with Instance(root / "pfy", main_cf={
                "myhostname": "pfy.example",
                "transport_maps": f"texthash:{root / 'transport'}"}) as inst:
            inst.start()
            yield inst, peer, vmail


def _maildir_messages(vmail: Path, user: str) -> list[str]:
    new = vmail / user / "new"
    if not new.is_dir():
        return []
    return [f.read_text(errors="replace") for f in sorted(new.iterdir())]


def _wait_maildir(peer, vmail, user, count=1) -> list[str]:
    msgs = []
    for _ in range(200):                       # 10 s
        msgs = _maildir_messages(vmail, user)
        if len(msgs) >= count:
            return msgs
        import time
        time.sleep(0.05)
    raise AssertionError(f"no mail in {user}'s Maildir; Postfix's log:\n{peer.log()}")


def test_postfix_accepts_and_delivers(world):
    inst, peer, vmail = world
    body = b"From: a@pfy.example\nTo: u@pf.example\nSubject: to postfix\n\nline one\n.dot line\n"
    p = inst.command("sendmail", "-f", "a@pfy.example", "u@pf.example", input=body)
    assert p.returncode == 0, p.stderr
    line = inst.wait_for_log(r"to=<u@pf\.example>.*status=sent", timeout=20)[0]
    m = re.search(r"status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)", line)
    assert m, line
    assert f"relay=127.0.0.1[127.0.0.1]:{peer.smtp_port}" in line
    # Postfix took it under the queue ID it told us, and delivered it.
    peer.wait_for_log(rf"{m.group(1)}: to=<u@pf\.example>, relay=virtual.*status=sent "
                      r"\(delivered to maildir\)")
    msg = _wait_maildir(peer, vmail, "u")[0]
    assert "Subject: to postfix" in msg
    assert "\n.dot line\n" in msg                     # dot-stuffing undone by Postfix
    assert re.search(r"Received: from pfy\.example \(localhost \[127\.0\.0\.1\]\)", msg), msg


def test_postfix_rejection_bounces_with_its_words(world):
    inst, peer, vmail = world
    body = b"From: sender@pf.example\nSubject: partly rejected\n\nhello\n"
    p = inst.command("sendmail", "-f", "sender@pf.example", "u@pf.example", "nobody@pf.example",
                     input=body)
    assert p.returncode == 0, p.stderr
    bounced = inst.wait_for_log(r"to=<nobody@pf\.example>.*status=bounced", timeout=20)[0]
    said = (f"host 127.0.0.1[127.0.0.1] said: 554 5.7.1 <nobody@pf.example>: Recipient address "
            f"rejected: {REJECT_TEXT} (in reply to RCPT TO command)")
    assert said in bounced and "dsn=5.7.1" in bounced
    # The good recipient of the same message was delivered.
    inst.wait_for_log(r"to=<u@pf\.example>.*status=sent", timeout=20, count=2)
    peer.wait_for_log(r"\w+: reject: RCPT from .*<nobody@pf\.example>: Recipient address "
                      rf"rejected: {REJECT_TEXT}")
    # The bounce goes back through pfy's smtp to the sender at Postfix.
    notice = _wait_maildir(peer, vmail, "sender")[0]
    assert "Undelivered Mail Returned to Sender" in notice
    assert "<nobody@pf.example>: host 127.0.0.1[127.0.0.1] said: 554 5.7.1" in notice
    assert REJECT_TEXT in notice
    # As Postfix's smtp: the server's reply is a typed diagnostic, and the
    # server is the Remote-MTA (RFC 3464 2.3.5, 2.3.6).
    assert re.search(r"Remote-MTA: dns; 127\.0\.0\.1\n", notice), notice
    assert re.search(r"Diagnostic-Code: smtp; 554 5\.7\.1\s+"
                     r"<nobody@pf\.example>: Recipient\s+address\s+rejected:\s+go\s+away",
                     notice), notice
    assert _maildir_messages(vmail, "nobody") == []
