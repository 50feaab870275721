"""verify(8): the cache rules of verify.c, and smtpd's reject_unverified_*
replies (smtpd_check.c reject_unverified_address()) with a fake service."""

from __future__ import annotations

import asyncio

import pytest

from pfy.access import AccessPolicy, SessionFacts, Stage
from pfy.config import load_config
from pfy.daemons.verify import PROBE_TTL, VerifyCore, VerifyService
from pfy.ipc.verify_client import (REQ_QUERY, REQ_UPDATE, STAT_BOUNCE, STAT_DEFER, STAT_OK,
                                   STAT_TODO, TEXT_IN_PROGRESS, VRFY_STAT_BAD, VRFY_STAT_OK,
                                   VerifyRequest)

H, D = 3600, 86400
T = 1_700_000_000     # verify.c works in time(): probed = 0 means long ago


def core(**kw):
    args = dict(pos_exp=31 * D, pos_try=7 * D, neg_exp=3 * D, neg_try=3 * H, neg_cache=True)
    args.update(kw)
    return VerifyCore(**args, clock=lambda: T)


# -- the cache ------------------------------------------------------------------

def test_unknown_address_is_in_progress_and_probed_once():
    c = core()
    assert c.query("a@x", now=T + 1000) == (STAT_TODO, TEXT_IN_PROGRESS, True)
    # A probe is out: no second one before PROBE_TTL.
    assert c.query("a@x", now=T + 1001) == (STAT_TODO, TEXT_IN_PROGRESS, False)
    assert c.query("a@x", now=T + 1000 + PROBE_TTL) == (STAT_TODO, TEXT_IN_PROGRESS, False)
    # A probe lost for PROBE_TTL seconds is sent again.
    assert c.query("a@x", now=T + 1001 + PROBE_TTL)[2] is True


def test_update_answers_later_queries():
    c = core()
    c.query("a@x", now=T + 100)
    assert c.update("a@x", STAT_OK, "250 2.1.5 Ok", now=T + 200)
    assert c.query("a@x", now=T + 300) == (STAT_OK, "250 2.1.5 Ok", False)
    c.update("b@x", STAT_BOUNCE, "said: 550 User unknown", now=T + 200)
    assert c.query("b@x", now=T + 300) == (STAT_BOUNCE, "said: 550 User unknown", False)


def test_refresh_probes_but_keeps_answering():
    c = core()
    c.update("a@x", STAT_OK, "ok", now=T + 0)
    # positive refresh (7d): a new probe, still "deliverable" meanwhile.
    assert c.query("a@x", now=T + 7 * D + 1) == (STAT_OK, "ok", True)
    assert c.query("a@x", now=T + 7 * D + 2) == (STAT_OK, "ok", False)
    c.update("b@x", STAT_DEFER, "timeout", now=T + 0)
    assert c.query("b@x", now=T + 3 * H - 1)[2] is False
    assert c.query("b@x", now=T + 3 * H + 1) == (STAT_DEFER, "timeout", True)


def test_expired_entries_are_in_progress_again():
    c = core()
    c.update("a@x", STAT_OK, "ok", now=T + 0)
    assert c.query("a@x", now=T + 31 * D + 1) == (STAT_TODO, TEXT_IN_PROGRESS, True)
    c.update("b@x", STAT_BOUNCE, "no", now=T + 0)
    assert c.query("b@x", now=T + 3 * D + 1) == (STAT_TODO, TEXT_IN_PROGRESS, True)


def test_failed_probe_does_not_clobber_deliverable():
    c = core()
    c.update("a@x", STAT_OK, "ok", now=T + 0)
    c.update("a@x", STAT_BOUNCE, "no", now=T + 10)
    assert c.query("a@x", now=T + 20)[:2] == (STAT_OK, "ok")
    c.update("b@x", STAT_BOUNCE, "no", now=T + 0)
    c.update("b@x", STAT_OK, "ok", now=T + 10)
    assert c.query("b@x", now=T + 20)[:2] == (STAT_OK, "ok")


def test_no_negative_cache():
    c = core(neg_cache=False)
    assert c.query("a@x", now=T + 0) == (STAT_TODO, TEXT_IN_PROGRESS, True)
    assert "a@x" not in c.cache                       # nothing stored for a new address
    c.update("a@x", STAT_BOUNCE, "no", now=T + 1)
    assert "a@x" not in c.cache
    c.update("a@x", STAT_OK, "ok", now=T + 2)
    assert c.query("a@x", now=T + 3)[:2] == (STAT_OK, "ok")


def test_bad_status_and_expire():
    c = core()
    assert not c.update("a@x", STAT_TODO, "", now=T + 0)
    assert not c.update("a@x", 7, "", now=T + 0)
    c.update("a@x", STAT_OK, "ok", now=T + 0)
    c.update("b@x", STAT_BOUNCE, "no", now=T + 0)
    assert c.expire(now=T + 3 * D + 1) == 1
    assert list(c.cache) == ["a@x"]


def test_address_literal_colons():
    c = core()
    c.update("u@[ipv6:2001:db8::1]", STAT_OK, "ok", now=T + 0)
    assert "u@[ipv6_2001_db8__1]" in c.cache
    assert c.query("u@[ipv6:2001:db8::1]", now=T + 1)[:2] == (STAT_OK, "ok")


class _Log:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)


def test_service_requests():
    probes = []
    svc = VerifyService(core(), cleanup_path="public/cleanup", sender="<>", timeout=1,
                        log=_Log())
    svc.probe = probes.append
    r = svc.handle(VerifyRequest(REQ_QUERY, "a@x"))
    assert (r.status, r.addr_status, r.why) == (VRFY_STAT_OK, STAT_TODO, TEXT_IN_PROGRESS)
    assert probes == ["a@x"]
    assert svc.handle(VerifyRequest(REQ_UPDATE, "a@x", STAT_OK, "ok")).status == VRFY_STAT_OK
    assert svc.handle(VerifyRequest(REQ_UPDATE, "a@x", 9, "?")).status == VRFY_STAT_BAD
    assert svc.handle(VerifyRequest("flush", "a@x")).status == VRFY_STAT_BAD
    assert svc.handle(VerifyRequest(REQ_QUERY, "")).status == VRFY_STAT_BAD
    assert svc.log.lines == ['bad recipient status 9 for recipient a@x',
                             'unrecognized request: "flush", ignored']


# -- smtpd: reject_unverified_recipient / reject_unverified_sender ----------------

class FakeVerify:
    """answers: address -> list of (status, why) handed out in turn (the
    last repeats); None = service failure."""

    def __init__(self, answers):
        self.answers = {k: list(v) for k, v in answers.items()}
        self.queries = []

    async def query(self, addr):
        self.queries.append(addr)
        seq = self.answers.get(addr)
        if seq is None:
            return None
        return seq.pop(0) if len(seq) > 1 else seq[0]

    def close(self):
        pass


def policy(tmp_path, verify, **params):
    base = {"mydestination": "ours.example", "myhostname": "mx.ours.example",
            "mynetworks": "127.0.0.1/32", "local_recipient_maps": "",
            "compatibility_level": "3.6", "alias_maps": "", "relay_domains": "remote.example",
            "address_verify_poll_count": "1"}
    base.update(params)
    (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in base.items()))
    return AccessPolicy.from_config(load_config(str(tmp_path)), verify=verify)


def check(p, rcpt, sender="s@remote.example"):
    f = SessionFacts(client_addr="192.0.2.7", client_name="c.example",
                     reverse_client_name="c.example", helo_name="c.example",
                     protocol="ESMTP", sender=sender)
    f.recipient = rcpt
    v = asyncio.run(p.check(Stage.RCPT, f))
    return None if v.reply is None else str(v.reply)


RCPT = "smtpd_recipient_restrictions"
CASES = [
    # (answer, extra params, want)
    ((STAT_TODO, TEXT_IN_PROGRESS), {},
     "450 4.1.1 <r@remote.example>: Recipient address rejected: unverified address: "
     "Address verification in progress"),
    ((STAT_OK, "250 Ok"), {}, None),
    # Defaults: an undeliverable address is 450 "unverified address" too.
    ((STAT_BOUNCE, "said: 550 no"), {},
     "450 4.1.1 <r@remote.example>: Recipient address rejected: unverified address: said: 550 no"),
    ((STAT_BOUNCE, "said: 550 no"), {"unverified_recipient_reject_code": "550"},
     "550 5.1.1 <r@remote.example>: Recipient address rejected: undeliverable address: said: 550 no"),
    ((STAT_DEFER, "timeout"), {"unverified_recipient_reject_code": "550"},
     "450 4.1.1 <r@remote.example>: Recipient address rejected: unverified address: timeout"),
    ((STAT_BOUNCE, "said: 550 no"), {"unverified_recipient_reject_code": "550",
                                     "unverified_recipient_reject_reason": "Address lookup failed"},
     "550 5.1.1 <r@remote.example>: Recipient address rejected: undeliverable address: "
     "Address lookup failed"),
    ((STAT_TODO, TEXT_IN_PROGRESS), {"unverified_recipient_defer_code": "250"}, None),
]


@pytest.mark.parametrize("answer,extra,want", CASES)
def test_unverified_recipient_replies(tmp_path, answer, extra, want):
    p = policy(tmp_path, FakeVerify({"r@remote.example": [answer]}),
               **{RCPT: "reject_unverified_recipient, reject_unauth_destination"}, **extra)
    assert check(p, "r@remote.example") == want


def test_four_hundred_is_defer_if_permit(tmp_path):
    # A later reject wins over the "unverified" deferral (DEFER_IF_PERMIT).
    p = policy(tmp_path, FakeVerify({"r@remote.example": [(STAT_TODO, TEXT_IN_PROGRESS)]}),
               **{RCPT: "reject_unverified_recipient, reject"})
    assert check(p, "r@remote.example") == \
        "554 5.7.1 <r@remote.example>: Recipient address rejected: Access denied"
    # With the tempfail action "defer" it is immediate.
    p = policy(tmp_path, FakeVerify({"r@remote.example": [(STAT_TODO, TEXT_IN_PROGRESS)]}),
               unverified_recipient_tempfail_action="defer",
               **{RCPT: "reject_unverified_recipient, reject"})
    assert check(p, "r@remote.example").startswith("450 4.1.1 <r@remote.example>: Recipient "
                                                   "address rejected: unverified address:")


def test_service_failure(tmp_path):
    p = policy(tmp_path, FakeVerify({}),
               **{RCPT: "reject_unverified_recipient, reject_unauth_destination"})
    assert check(p, "r@remote.example") == \
        "450 4.1.1 <r@remote.example>: Recipient address rejected: address verification problem"


def test_polls_while_in_progress(tmp_path):
    v = FakeVerify({"r@remote.example": [(STAT_TODO, TEXT_IN_PROGRESS), (STAT_OK, "ok")]})
    p = policy(tmp_path, v, address_verify_poll_count="3", address_verify_poll_delay="0s",
               **{RCPT: "reject_unverified_recipient, reject_unauth_destination"})
    assert check(p, "r@remote.example") is None
    assert v.queries == ["r@remote.example"] * 2


def test_unverified_sender(tmp_path):
    v = FakeVerify({"s@remote.example": [(STAT_BOUNCE, "said: 550 no")]})
    p = policy(tmp_path, v, smtpd_sender_restrictions="reject_unverified_sender",
               unverified_sender_reject_code="550",
               **{RCPT: "reject_unauth_destination"})
    assert check(p, "r@remote.example") == \
        "550 5.1.7 <s@remote.example>: Sender address rejected: undeliverable address: said: 550 no"
    v = FakeVerify({"s@remote.example": [(STAT_TODO, TEXT_IN_PROGRESS)]})
    p = policy(tmp_path, v, smtpd_sender_restrictions="reject_unverified_sender",
               **{RCPT: "reject_unauth_destination"})
    assert check(p, "r@remote.example") == ("450 4.1.7 <s@remote.example>: Sender address "
                                            "rejected: unverified address: "
                                            "Address verification in progress")
    # The null sender is not verified.
    assert check(p, "r@remote.example", sender="") is None
