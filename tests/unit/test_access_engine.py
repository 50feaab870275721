"""pfy.access: every restriction with fake facts, a fake resolver and
inline/texthash tables; texts and codes are Postfix 3.7's smtpd_check.c."""

import asyncio

import pytest

from pfy.access import AccessConfigError, AccessPolicy, SessionFacts, Stage
from pfy.config import load_config
from pfy.dns import DnsAnswer, DnsStatus

F, NF, TF = DnsStatus.FOUND, DnsStatus.NOTFOUND, DnsStatus.TEMPFAIL


class FakeResolver:
    """zones: {(name, type): [records]}; names in `fail` fail temporarily."""

    def __init__(self, zones=None, fail=()):
        self.zones = zones or {}
        self.fail = set(fail)

    async def lookup(self, name, rdtype):
        if name in self.fail:
            return DnsAnswer(TF)
        recs = self.zones.get((name, rdtype))
        return DnsAnswer(F, list(recs), 60) if recs else DnsAnswer(NF)

    async def txt(self, name):
        return await self.lookup(name, "TXT")

    async def mx(self, name):
        return await self.lookup(name, "MX")


def policy(tmp_path, resolver=None, **params):
    base = {"mydestination": "ours.example", "myhostname": "mx.ours.example",
            "mynetworks": "127.0.0.1/32", "local_recipient_maps": "",
            "compatibility_level": "3.6", "alias_maps": ""}
    base.update(params)
    (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in base.items()))
    cfg = load_config(str(tmp_path))
    return AccessPolicy.from_config(cfg, resolver=resolver or FakeResolver())


def table(tmp_path, entries):
    """A texthash table (values may hold spaces and $names)."""
    path = tmp_path / f"t{len(list(tmp_path.glob('t*')))}"
    path.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    return f"texthash:{path}"


def facts(**kw):
    d = dict(client_addr="192.0.2.7", client_name="mx.remote.example",
             reverse_client_name="mx.remote.example", helo_name="mx.remote.example",
             protocol="ESMTP", sender="a@remote.example")
    d.update(kw)
    return SessionFacts(**d)


def rcpt(p, f, to):
    f.recipient = to
    return asyncio.run(p.check(Stage.RCPT, f))


def text(v):
    return None if v.reply is None else str(v.reply)


# -- relay control ---------------------------------------------------------

RELAY_CASES = [
    # (recipient, expected reply or None)
    ("u@ours.example", None),
    ("u@remote.example", "554 5.7.1 <u@remote.example>: Relay access denied"),
    ("u%remote.example@ours.example", "554 5.7.1 <u%remote.example@ours.example>: Relay access denied"),
    ("remote.example!u@ours.example", "554 5.7.1 <remote.example!u@ours.example>: Relay access denied"),
    ("u@remote.example@ours.example", "554 5.7.1 <u@remote.example@ours.example>: Relay access denied"),
]


@pytest.mark.parametrize("to,want", RELAY_CASES)
def test_reject_unauth_destination(tmp_path, to, want):
    p = policy(tmp_path, smtpd_relay_restrictions="permit_mynetworks, reject_unauth_destination")
    got = text(rcpt(p, facts(), to))
    assert got == want, f"got {got!r} want {want!r}"


def test_mynetworks_may_relay(tmp_path):
    p = policy(tmp_path, smtpd_relay_restrictions="permit_mynetworks, reject_unauth_destination")
    assert rcpt(p, facts(client_addr="127.0.0.1"), "u@remote.example").ok


def test_mynetworks_exclusion_and_cidr(tmp_path):
    p = policy(tmp_path, mynetworks="!127.0.0.2 127.0.0.0/8 [::1]/128",
               smtpd_relay_restrictions="permit_mynetworks, reject_unauth_destination")
    assert rcpt(p, facts(client_addr="127.0.0.3"), "u@remote.example").ok
    assert not rcpt(p, facts(client_addr="127.0.0.2"), "u@remote.example").ok
    assert rcpt(p, facts(client_addr="::1"), "u@remote.example").ok


def test_defer_unauth_destination(tmp_path):
    p = policy(tmp_path)   # level >= 1 default: ... defer_unauth_destination
    assert text(rcpt(p, facts(), "u@remote.example")) == "454 4.7.1 <u@remote.example>: Relay access denied"


def test_relay_domains_permit(tmp_path):
    p = policy(tmp_path, relay_domains="relay.example",
               smtpd_relay_restrictions="reject_unauth_destination")
    assert rcpt(p, facts(), "u@relay.example").ok
    assert rcpt(p, facts(), "u@sub.relay.example").ok


def test_no_relay_restriction_is_fatal(tmp_path):
    with pytest.raises(AccessConfigError, match="specify at least one working instance of"):
        policy(tmp_path, smtpd_relay_restrictions="permit_mynetworks", smtpd_recipient_restrictions="")


def test_sasl_authenticated_may_relay(tmp_path):
    p = policy(tmp_path)
    assert rcpt(p, facts(sasl_username="alice"), "u@remote.example").ok


# -- generic actions, warn_if_reject, defer_if_* ----------------------------

def test_reject_and_defer_texts(tmp_path):
    p = policy(tmp_path, smtpd_client_restrictions="reject")
    assert text(rcpt(p, facts(), "u@ours.example")) == \
        "554 5.7.1 <mx.remote.example[192.0.2.7]>: Client host rejected: Access denied"
    p = policy(tmp_path, smtpd_sender_restrictions="defer")
    assert text(rcpt(p, facts(), "u@ours.example")) == \
        "450 4.7.1 <a@remote.example>: Sender address rejected: Try again later"


def test_warn_if_reject_only_logs(tmp_path, capsys):
    p = policy(tmp_path, smtpd_client_restrictions="warn_if_reject reject")
    assert rcpt(p, facts(), "u@ours.example").ok


def test_defer_if_permit_turns_permit_into_defer(tmp_path):
    p = policy(tmp_path, smtpd_client_restrictions="defer_if_permit",
               smtpd_recipient_restrictions="permit")
    assert text(rcpt(p, facts(), "u@ours.example")) == \
        "450 4.7.1 <mx.remote.example[192.0.2.7]>: Client host rejected: defer_if_permit requested"


def test_defer_if_reject_turns_reject_into_defer(tmp_path):
    p = policy(tmp_path, smtpd_sender_restrictions="defer_if_reject reject")
    assert text(rcpt(p, facts(), "u@ours.example")) == \
        "450 4.7.1 <a@remote.example>: Sender address rejected: defer_if_reject requested"


# -- access tables ----------------------------------------------------------

ACCESS_CASES = [
    ("REJECT", "554 5.7.1 <a@bad.example>: Sender address rejected: Access denied"),
    ("REJECT go away", "554 5.7.1 <a@bad.example>: Sender address rejected: go away"),
    ("DEFER later", "450 4.7.1 <a@bad.example>: Sender address rejected: later"),
    ("550 Go away", "550 5.7.1 <a@bad.example>: Sender address rejected: Go away"),
    ("550 5.1.8 Go away", "550 5.1.8 <a@bad.example>: Sender address rejected: Go away"),
    ("450 Slow down", "450 4.7.1 <a@bad.example>: Sender address rejected: Slow down"),
    ("OK", "reject"), ("DUNNO", "reject"), ("1234", "reject"),
    ("HOLD", "reject"), ("DISCARD", "reject"), ("WARN hmm", "reject"),
    ("permit_mynetworks reject", "554 5.7.1 <a@bad.example>: Sender address rejected: Access denied"),
    ("DEFER_IF_PERMIT busy", "reject"),   # a later reject wins over defer_if_permit
]


@pytest.mark.parametrize("value,want", ACCESS_CASES)
def test_check_sender_access_results(tmp_path, value, want):
    t = table(tmp_path, {"bad.example": value})
    p = policy(tmp_path, smtpd_sender_restrictions=f"check_sender_access {t}",
               smtpd_recipient_restrictions="reject_unauth_destination, check_recipient_access inline:{u@ours.example=REJECT}")
    got = text(rcpt(p, facts(sender="a@bad.example"), "u@ours.example"))
    if want == "reject":
        want = "554 5.7.1 <u@ours.example>: Recipient address rejected: Access denied"
    assert got == want, f"got {got!r} want {want!r}"


def test_side_effect_actions(tmp_path):
    p = policy(tmp_path, smtpd_recipient_restrictions=(
        f"check_recipient_access {table(tmp_path, {'u@ours.example': 'HOLD quarantine'})}, "
        f"check_sender_access {table(tmp_path, {'a@remote.example': 'FILTER smtp:[127.0.0.1]:10025'})}, "
        f"check_client_access {table(tmp_path, {'192.0.2.7': 'PREPEND X-Seen: yes'})}, reject_unauth_destination"))
    v = rcpt(p, facts(), "u@ours.example")
    assert v.ok
    assert [(a.kind, a.value) for a in v.actions] == [
        ("HOLD", "quarantine"), ("FILTER", "smtp:[127.0.0.1]:10025"), ("PREPEND", "X-Seen: yes")]


def test_client_access_name_then_address(tmp_path):
    p = policy(tmp_path, smtpd_client_restrictions="check_client_access inline:{remote.example=REJECT, 192.0.2=OK}")
    assert not rcpt(p, facts(), "u@ours.example").ok       # parent domain matches
    p = policy(tmp_path, smtpd_client_restrictions="check_client_access inline:{192.0.2=REJECT}")
    assert text(rcpt(p, facts(client_name="unknown"), "u@ours.example")) == \
        "554 5.7.1 <unknown[192.0.2.7]>: Client host rejected: Access denied"


def test_helo_access_and_null_sender_key(tmp_path):
    p = policy(tmp_path, smtpd_helo_restrictions=f"check_helo_access {table(tmp_path, {'localhost': 'REJECT fake'})}",
               smtpd_sender_restrictions=f"check_sender_access {table(tmp_path, {'<>': '550 no bounces'})}")
    assert text(rcpt(p, facts(helo_name="localhost"), "u@ours.example")) == \
        "554 5.7.1 <localhost>: Helo command rejected: fake"
    assert text(rcpt(p, facts(sender=""), "u@ours.example")) == \
        "550 5.7.1 <>: Sender address rejected: no bounces"


def test_restriction_classes(tmp_path):
    p = policy(tmp_path, smtpd_restriction_classes="strict",
               strict="reject_non_fqdn_sender, permit",
               smtpd_recipient_restrictions="check_recipient_access inline:{u@ours.example=strict}, reject_unauth_destination")
    assert text(rcpt(p, facts(sender="root"), "u@ours.example")) == \
        "504 5.5.2 <root>: Sender address rejected: need fully-qualified address"
    assert rcpt(p, facts(sender="a@b.example"), "u@ours.example").ok


def test_undefined_class_is_fatal(tmp_path):
    with pytest.raises(AccessConfigError, match="needs a definition"):
        policy(tmp_path, smtpd_restriction_classes="nothere")


def test_unknown_restriction_is_451(tmp_path):
    p = policy(tmp_path, smtpd_client_restrictions="reject_everything_bad")
    assert text(rcpt(p, facts(), "u@ours.example")) == "451 4.3.5 Server configuration error"


# -- client and helo hostnames -----------------------------------------------

def test_unknown_client_hostname(tmp_path):
    p = policy(tmp_path, smtpd_client_restrictions="reject_unknown_client_hostname")
    assert text(rcpt(p, facts(client_name="unknown", client_name_status="temp"), "u@ours.example")) == \
        "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.7]"
    p = policy(tmp_path, smtpd_client_restrictions="reject_unknown_client_hostname", unknown_client_reject_code="550")
    assert text(rcpt(p, facts(client_name="unknown", client_name_status="forged"), "u@ours.example")) == \
        "550 5.7.1 Client host rejected: cannot find your hostname, [192.0.2.7]"
    assert rcpt(p, facts(), "u@ours.example").ok


def test_unknown_reverse_client_hostname(tmp_path):
    p = policy(tmp_path, smtpd_client_restrictions="reject_unknown_reverse_client_hostname")
    assert text(rcpt(p, facts(reverse_client_name="unknown", reverse_client_name_status="perm"), "u@ours.example")) == \
        "450 4.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.7]"


HELO_CASES = [
    ("reject_invalid_helo_hostname", "bad_host!", "501 5.5.2 <bad_host!>: Helo command rejected: Invalid name"),
    ("reject_invalid_helo_hostname", "[1.2.3.999]", "501 5.5.2 <[1.2.3.999]>: Helo command rejected: invalid ip address"),
    ("reject_invalid_helo_hostname", "ok.example.", None),
    ("reject_non_fqdn_helo_hostname", "localhost", "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"),
    ("reject_non_fqdn_helo_hostname", "[192.0.2.1]", None),
    ("reject_unknown_helo_hostname", "nx.example", "450 4.7.1 <nx.example>: Helo command rejected: Host not found"),
    ("reject_unknown_helo_hostname", "mx.remote.example", None),
]


@pytest.mark.parametrize("restriction,helo,want", HELO_CASES)
def test_helo_restrictions(tmp_path, restriction, helo, want):
    dns = FakeResolver({("mx.remote.example", "A"): ["192.0.2.7"]})
    p = policy(tmp_path, dns, smtpd_helo_restrictions=restriction)
    got = text(rcpt(p, facts(helo_name=helo), "u@ours.example"))
    assert got == want, f"got {got!r} want {want!r}"


def test_unknown_helo_tempfail_defers_if_permit(tmp_path):
    dns = FakeResolver(fail={"slow.example"})
    p = policy(tmp_path, dns, smtpd_helo_restrictions="reject_unknown_helo_hostname")
    assert text(rcpt(p, facts(helo_name="slow.example"), "u@ours.example")) == \
        "450 4.7.1 <slow.example>: Helo command rejected: Host not found"


# -- sender and recipient domains -------------------------------------------

def test_unknown_sender_and_recipient_domain(tmp_path):
    dns = FakeResolver({("good.example", "MX"): [(10, "mx.good.example")],
                        ("nullmx.example", "MX"): [(0, ".")]}, fail={"slow.example"})
    p = policy(tmp_path, dns, smtpd_sender_restrictions="reject_unknown_sender_domain",
               smtpd_relay_restrictions="",
               smtpd_recipient_restrictions="reject_unknown_recipient_domain, permit, reject_unauth_destination")
    assert text(rcpt(p, facts(sender="a@nx.example"), "u@ours.example")) == \
        "450 4.1.8 <a@nx.example>: Sender address rejected: Domain not found"
    assert text(rcpt(p, facts(sender="a@good.example"), "u@nx.example")) == \
        "450 4.1.2 <u@nx.example>: Recipient address rejected: Domain not found"
    assert text(rcpt(p, facts(sender="a@nullmx.example"), "u@ours.example")) == \
        "556 5.7.27 <a@nullmx.example>: Sender address rejected: Domain nullmx.example does not accept mail (nullMX)"
    assert text(rcpt(p, facts(sender="a@slow.example"), "u@ours.example")) == \
        "450 4.1.8 <a@slow.example>: Sender address rejected: Domain not found"
    assert rcpt(p, facts(sender="a@good.example"), "u@ours.example").ok
    assert rcpt(p, facts(sender=""), "u@ours.example").ok


def test_non_fqdn_recipient(tmp_path):
    p = policy(tmp_path, smtpd_relay_restrictions="",
               smtpd_recipient_restrictions="reject_non_fqdn_recipient, permit, reject_unauth_destination")
    assert text(rcpt(p, facts(), "u@localhost")) == \
        "504 5.5.2 <u@localhost>: Recipient address rejected: need fully-qualified address"


# -- recipient validation ------------------------------------------------------

def test_local_recipient_maps(tmp_path):
    p = policy(tmp_path, local_recipient_maps="inline:{alice=x}")
    assert text(rcpt(p, facts(), "bob@ours.example")) == \
        "550 5.1.1 <bob@ours.example>: Recipient address rejected: User unknown in local recipient table"
    assert rcpt(p, facts(), "alice@ours.example").ok
    assert rcpt(p, facts(), "postmaster@ours.example").ok


def test_virtual_and_relay_recipient_maps(tmp_path):
    p = policy(tmp_path, virtual_mailbox_domains="vmb.example", virtual_mailbox_maps="inline:{a@vmb.example=a/}",
               relay_domains="rel.example", relay_recipient_maps="inline:{a@rel.example=x}",
               virtual_alias_domains="va.example", virtual_alias_maps="inline:{a@va.example=alice}")
    assert text(rcpt(p, facts(), "b@vmb.example")) == \
        "550 5.1.1 <b@vmb.example>: Recipient address rejected: User unknown in virtual mailbox table"
    assert text(rcpt(p, facts(), "b@rel.example")) == \
        "550 5.1.1 <b@rel.example>: Recipient address rejected: User unknown in relay recipient table"
    assert text(rcpt(p, facts(), "b@va.example")) == \
        "550 5.1.1 <b@va.example>: Recipient address rejected: User unknown in virtual alias table"
    for ok in ("a@vmb.example", "a@rel.example", "a@va.example"):
        assert rcpt(p, facts(), ok).ok, ok


def test_unlisted_recipient_reject_code(tmp_path):
    p = policy(tmp_path, local_recipient_maps="inline:{alice=x}", unknown_local_recipient_reject_code="450")
    assert text(rcpt(p, facts(), "bob@ours.example")).startswith("450 4.1.1 <bob@ours.example>")


def test_reject_unlisted_sender(tmp_path):
    p = policy(tmp_path, local_recipient_maps="inline:{alice=x}", smtpd_reject_unlisted_sender="yes")
    assert text(rcpt(p, facts(sender="bob@ours.example"), "alice@ours.example")) == \
        "550 5.1.0 <bob@ours.example>: Sender address rejected: User unknown in local recipient table"


# receive_override_options = no_unknown_recipient_checks: smtpd_check.c
# check_recipient_rcpt_maps() and check_sender_rcpt_maps() return 0 at once.
UNKNOWN_USER_MAPS = dict(
    local_recipient_maps="inline:{alice=x}",
    virtual_mailbox_domains="vmb.example", virtual_mailbox_maps="inline:{a@vmb.example=a/}",
    relay_domains="rel.example", relay_recipient_maps="inline:{a@rel.example=x}",
    virtual_alias_domains="va.example", virtual_alias_maps="inline:{a@va.example=alice}")
UNKNOWN_USERS = ["bob@ours.example", "b@vmb.example", "b@rel.example", "b@va.example"]


@pytest.mark.parametrize("restrictions", [
    "",                                                   # the implicit check at the end of RCPT
    "reject_unlisted_recipient",
    "check_recipient_maps",
])
@pytest.mark.parametrize("to", UNKNOWN_USERS)
def test_no_unknown_recipient_checks(tmp_path, restrictions, to):
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    params = dict(UNKNOWN_USER_MAPS, smtpd_recipient_restrictions=restrictions)
    normal = policy(tmp_path / "with", **params)
    assert text(rcpt(normal, facts(), to)).startswith(f"550 5.1.1 <{to}>: Recipient address rejected: User unknown")
    override = policy(tmp_path / "without", receive_override_options="no_unknown_recipient_checks", **params)
    got = text(rcpt(override, facts(), to))
    assert got is None, f"got {got!r} want None"


def test_no_unknown_recipient_checks_vrfy(tmp_path):
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    normal = policy(tmp_path / "with", **UNKNOWN_USER_MAPS)
    f = facts(sender=None, recipient="bob@ours.example")
    assert text(asyncio.run(normal.check(Stage.VRFY, f))) == \
        "550 5.1.1 <bob@ours.example>: Recipient address rejected: User unknown in local recipient table"
    override = policy(tmp_path / "without", receive_override_options="no_unknown_recipient_checks",
                      **UNKNOWN_USER_MAPS)
    f = facts(sender=None, recipient="bob@ours.example")
    assert asyncio.run(override.check(Stage.VRFY, f)).ok


@pytest.mark.parametrize("params", [
    dict(smtpd_reject_unlisted_sender="yes"),
    dict(smtpd_sender_restrictions="reject_unlisted_sender"),
])
def test_no_unknown_recipient_checks_sender_too(tmp_path, params):
    """check_sender_rcpt_maps() tests the same INPUT_TRANSP_UNKNOWN_RCPT bit."""
    p = policy(tmp_path, local_recipient_maps="inline:{alice=x}",
               receive_override_options="no_address_mappings, no_unknown_recipient_checks", **params)
    assert rcpt(p, facts(sender="bob@ours.example"), "alice@ours.example").ok


def test_no_unknown_recipient_checks_does_not_resolve(tmp_path):
    """Postfix returns before smtpd_resolve_addr(): trivial-rewrite being
    away is no 451 when nothing else needs the answer."""

    class DownRewrite:
        calls = 0

        def resolve(self, sender, addr):
            DownRewrite.calls += 1
            raise OSError("private/rewrite: connection refused")

    base = {"mydestination": "ours.example", "myhostname": "mx.ours.example",
            "mynetworks": "192.0.2.0/24", "local_recipient_maps": "inline:{alice=x}",
            "compatibility_level": "3.6", "alias_maps": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination"}
    for sub, extra, want in (
            ("with", "", "451 4.3.0 <bob@ours.example>: Temporary lookup failure"),
            ("without", "receive_override_options = no_unknown_recipient_checks\n", None)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in base.items()) + extra)
        DownRewrite.calls = 0
        p = AccessPolicy.from_config(load_config(str(tmp_path / sub)), resolver=FakeResolver(),
                                     rewrite=DownRewrite())
        got = text(rcpt(p, facts(), "bob@ours.example"))
        assert got == want, f"{sub}: got {got!r} want {want!r}"
        assert (DownRewrite.calls == 0) == (want is None)


def test_other_receive_override_options_keep_recipient_checks(tmp_path):
    p = policy(tmp_path, local_recipient_maps="inline:{alice=x}",
               receive_override_options="no_address_mappings, no_header_body_checks, no_milters")
    assert text(rcpt(p, facts(), "bob@ours.example")) == \
        "550 5.1.1 <bob@ours.example>: Recipient address rejected: User unknown in local recipient table"


# -- SASL login mismatch ---------------------------------------------------------

def test_sender_login_mismatch(tmp_path):
    p = policy(tmp_path, smtpd_sender_login_maps="inline:{a@ours.example=alice}",
               smtpd_sender_restrictions="reject_sender_login_mismatch")
    assert rcpt(p, facts(sender="a@ours.example", sasl_username="alice"), "u@ours.example").ok
    assert text(rcpt(p, facts(sender="a@ours.example", sasl_username="bob"), "u@ours.example")) == \
        "553 5.7.1 <a@ours.example>: Sender address rejected: not owned by user bob"
    assert text(rcpt(p, facts(sender="a@ours.example"), "u@ours.example")) == \
        "553 5.7.1 <a@ours.example>: Sender address rejected: not logged in"
    p = policy(tmp_path, smtpd_sender_login_maps="inline:{a@ours.example=alice}",
               smtpd_sender_restrictions="reject_known_sender_login_mismatch")
    assert rcpt(p, facts(sender="z@ours.example", sasl_username="bob"), "u@ours.example").ok


# -- DNSBL ------------------------------------------------------------------------

def test_rbl_client_reply(tmp_path):
    dns = FakeResolver({("7.2.0.192.zen.example", "A"): ["127.0.0.4"],
                        ("7.2.0.192.zen.example", "TXT"): ["see http://zen.example/?192.0.2.7"]})
    p = policy(tmp_path, dns, smtpd_client_restrictions="reject_rbl_client zen.example=127.0.0.[2..11]")
    assert text(rcpt(p, facts(), "u@ours.example")) == (
        "554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.example; "
        "see http://zen.example/?192.0.2.7")
    p = policy(tmp_path, dns, smtpd_client_restrictions="reject_rbl_client zen.example=127.0.0.2")
    assert rcpt(p, facts(), "u@ours.example").ok


def test_rhsbl_sender_and_reply_maps(tmp_path):
    dns = FakeResolver({("remote.example.dbl.example", "A"): ["127.0.1.2"]})
    p = policy(tmp_path, dns, smtpd_sender_restrictions="reject_rhsbl_sender dbl.example",
               rbl_reply_maps=table(tmp_path, {"dbl.example": "550 5.7.1 $rbl_what is listed"}))
    assert text(rcpt(p, facts(), "u@ours.example")) == "550 5.7.1 remote.example is listed"


def test_dnswl_never_overrides_relay_control(tmp_path):
    dns = FakeResolver({("7.2.0.192.wl.example", "A"): ["127.0.0.2"]})
    p = policy(tmp_path, dns, smtpd_relay_restrictions="permit_dnswl_client wl.example, reject_unauth_destination")
    assert not rcpt(p, facts(), "u@remote.example").ok
    assert rcpt(p, facts(), "u@ours.example").ok


# -- delay_reject ordering and stages -------------------------------------------

def test_delay_reject_waits_for_rcpt(tmp_path):
    p = policy(tmp_path, smtpd_client_restrictions="reject")
    f = facts()
    assert asyncio.run(p.check(Stage.CONNECT, f)).ok
    assert asyncio.run(p.check(Stage.HELO, f)).ok
    assert asyncio.run(p.check(Stage.MAIL, f)).ok
    assert not rcpt(p, f, "u@ours.example").ok
    assert not rcpt(p, f, "v@ours.example").ok          # re-evaluated per RCPT


def test_no_delay_reject_checks_at_connect(tmp_path):
    p = policy(tmp_path, smtpd_delay_reject="no", smtpd_client_restrictions="reject")
    v = asyncio.run(p.check(Stage.CONNECT, facts(helo_name=None, sender=None)))
    assert str(v.reply) == "554 5.7.1 <mx.remote.example[192.0.2.7]>: Client host rejected: Access denied"


def test_client_before_helo_before_sender(tmp_path):
    p = policy(tmp_path, smtpd_client_restrictions=f"check_client_access {table(tmp_path, {'192.0.2.7': 'REJECT c'})}",
               smtpd_helo_restrictions="reject", smtpd_sender_restrictions="reject")
    assert text(rcpt(p, facts(), "u@ours.example")).endswith("Client host rejected: c")


def test_data_and_pipelining(tmp_path):
    p = policy(tmp_path, smtpd_data_restrictions="reject_unauth_pipelining")
    f = facts(recipient="u@ours.example", recipient_count=1, pipelined=True)
    assert str(asyncio.run(p.check(Stage.DATA, f)).reply) == \
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining"


def test_etrn_restrictions(tmp_path):
    p = policy(tmp_path, smtpd_etrn_restrictions="permit_mynetworks, reject")
    v = asyncio.run(p.check(Stage.ETRN, facts(etrn_domain="ours.example")))
    assert str(v.reply) == "554 5.7.1 <ours.example>: Etrn command rejected: Access denied"


def test_log_line_shape(tmp_path):
    from pfy.access import format_whatsup
    f = facts(helo_name="h")
    assert format_whatsup("reject", "RCPT", f, "554 5.7.1 <b@y>: Relay access denied", "a@x", "b@y") == (
        "NOQUEUE: reject: RCPT from mx.remote.example[192.0.2.7]: 554 5.7.1 <b@y>: Relay access denied; "
        "from=<a@x> to=<b@y> proto=ESMTP helo=<h>")


def test_soft_bounce(tmp_path):
    p = policy(tmp_path, soft_bounce="yes")
    assert text(rcpt(p, facts(), "u@remote.example")).startswith("454 4.7.1")


def test_defer_if_permit_from_access_table(tmp_path):
    t = table(tmp_path, {"bad.example": "DEFER_IF_PERMIT busy"})
    p = policy(tmp_path, smtpd_sender_restrictions=f"check_sender_access {t}")
    assert text(rcpt(p, facts(sender="a@bad.example"), "u@ours.example")) == \
        "450 4.7.1 <a@bad.example>: Sender address rejected: busy"
