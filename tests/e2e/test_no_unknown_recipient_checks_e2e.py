"""receive_override_options = no_unknown_recipient_checks on a second smtpd.

The usual after-filter layout (FILTER_README): the public smtpd rejects
unknown users, the re-injection smtpd a content filter talks to carries
"-o receive_override_options=no_unknown_recipient_checks" and takes
whatever the first one already took. Postfix's smtpd_check.c skips both
check_recipient_rcpt_maps() (RCPT, VRFY) and check_sender_rcpt_maps()
(smtpd_reject_unlisted_sender) under that option.

One pfy instance with both services; the same dialogues against a private
Debian Postfix configured the same way give the same reply lines. No
message is ever sent (no DATA), so nothing is queued or delivered.
"""

from __future__ import annotations

import re
import smtplib
import sys
from pathlib import Path

import pytest

from instance import Instance, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compare"))
from test_smtpd_replies_helpers import PostfixInstance, normalize_reply, postfix_available  # noqa: E402

OUR = "mx.example"
OVERRIDE = "-o receive_override_options=no_unknown_recipient_checks"

MAIN_CF = {
    "myhostname": OUR,
    "mydestination": f"{OUR}, localhost",
    "mynetworks": "127.0.0.1/32",
    # local_recipient_maps stays at its default (proxy:unix:passwd.byname
    # $alias_maps): root is known, nosuchuser is not.
    "alias_maps": "",
    "smtpd_reject_unlisted_sender": "yes",
    "local_transport": "discard:local",
    "default_transport": "discard:remote",
    "relay_transport": "discard:relay",
}

UNKNOWN = f"nosuchuser@{OUR}"
KNOWN = f"root@{OUR}"

# name: (MAIL FROM, RCPT TO or None for VRFY, want on the normal port, want on the override port)
DIALOGUES = {
    "unknown recipient": (
        "sender@outside.example", UNKNOWN,
        f"550 5.1.1 <{UNKNOWN}>: Recipient address rejected: User unknown in local recipient table",
        "250 2.1.5 Ok"),
    "known recipient": ("sender@outside.example", KNOWN, "250 2.1.5 Ok", "250 2.1.5 Ok"),
    "unknown sender": (
        UNKNOWN, KNOWN,
        f"550 5.1.0 <{UNKNOWN}>: Sender address rejected: User unknown in local recipient table",
        "250 2.1.5 Ok"),
    "vrfy unknown": (
        None, UNKNOWN,
        f"550 5.1.1 <{UNKNOWN}>: Recipient address rejected: User unknown in local recipient table",
        f"252 2.0.0 {UNKNOWN}"),
}


def _dialogue(port: int, sender: str | None, rcpt: str) -> str:
    """The reply line to RCPT TO (or to VRFY when sender is None)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.ehlo("filter.example")
        if sender is None:
            s.putcmd("VRFY", rcpt)
        else:
            code, _ = s.mail(sender)
            assert code == 250
            s.putcmd("RCPT", f"TO:<{rcpt}>")
        code, text = s.getreply()
        return f"{code} {text.decode(errors='replace')}"


def _run(normal_port: int, override_port: int) -> dict[str, tuple[str, str]]:
    return {name: (_dialogue(normal_port, d[0], d[1]), _dialogue(override_port, d[0], d[1]))
            for name, d in DIALOGUES.items()}


def _master_cf(override_port: int) -> str:
    from pfy.server.paths import shipped_file
    text = Path(shipped_file("master.cf")).read_text()
    text = re.sub(r"^smtp(\s+inet\b)", r"127.0.0.1:{smtp_port}\1", text, flags=re.M)
    return text + (f"127.0.0.1:{override_port} inet n - y - - smtpd\n"
                   f"  {OVERRIDE}\n")


@pytest.fixture(scope="module")
def pfy(tmp_path_factory):
    override_port = free_port()
    root = tmp_path_factory.mktemp("nounknownrcpt")
    with Instance(root, main_cf=MAIN_CF, master_cf=_master_cf(override_port)) as inst:
        inst.start()
        inst.wait_for_log("daemon started")
        results = _run(inst.smtp_port, override_port)
        inst.wait_for_log(r"NOQUEUE: reject: RCPT from \S+\[127\.0\.0\.1\]: 550 5\.1\.1 "
                          rf"<{re.escape(UNKNOWN)}>: Recipient address rejected")
        yield inst, results


CASES = list(DIALOGUES)


@pytest.mark.parametrize("name", CASES)
def test_normal_and_override_port(pfy, name):
    _, results = pfy
    normal, override = results[name]
    want_normal, want_override = DIALOGUES[name][2:]
    assert normal == want_normal, f"{name}, normal port: got {normal!r} want {want_normal!r}"
    assert override == want_override, f"{name}, override port: got {override!r} want {want_override!r}"


def test_override_port_logs_no_reject(pfy):
    """The only RCPT reject lines are the normal port's two; nothing was
    delivered."""
    inst, _ = pfy
    rejects = [ln for ln in inst.log().splitlines() if "NOQUEUE: reject: RCPT from" in ln]
    assert len(rejects) == 2, rejects
    assert not any(ln for ln in inst.log().splitlines() if re.search(r": [0-9A-F]+: to=<", ln))


@pytest.fixture(scope="module")
def postfix_results(tmp_path_factory):
    why = postfix_available()
    if why:
        pytest.skip(why)
    override_port = free_port()
    root = tmp_path_factory.mktemp("nounknownrcpt-postfix")
    extra = f"127.0.0.1:{override_port} inet n - n - - smtpd\n  {OVERRIDE}"
    with PostfixInstance(root, dict(MAIN_CF), master_extra=extra) as pf:
        pf.start()
        yield _run(pf.smtp_port, override_port)


@pytest.mark.parametrize("name", CASES)
def test_same_replies_as_postfix(pfy, postfix_results, name):
    ours, theirs = pfy[1][name], postfix_results[name]
    for port, got, want in zip(("normal", "override"), ours, theirs):
        got = normalize_reply(got, OUR)
        want = normalize_reply(want, OUR)
        assert got == want, f"{name}, {port} port: got {got!r} want {want!r}"
