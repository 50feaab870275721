"""The sans-I/O SMTP/LMTP client core, with literal bytes."""

from pfy.smtp.client import (BOUNCED, DEFERRED, SENT, BodyEncoder, Features, ReplyParser,
                             SmtpClient, Transaction, TxRecipient, notify_param, qp_encode_line)
from pfy.smtp.sasl_client import SaslClient, choose_mechanism, lookup_credentials
from pfy.daemons.smtp.routing import RouteError, order_mx, parse_nexthop

NAMADDR = "mx.y[192.0.2.3]"


def replies(data: bytes):
    p = ReplyParser()
    p.feed(data)
    out = []
    while (r := p.next_reply()) is not None:
        out.append(r)
    return out


def test_multiline_reply_and_dsn():
    r, = replies(b"250-mx.y hello\r\n250-PIPELINING\r\n250 SIZE 1000\r\n")
    assert r.code == 250 and r.dsn == "2.0.0"
    f = Features.from_ehlo(r)
    assert f.pipelining and f.size == 1000 and not f.dsn


def test_enhanced_code_taken_only_when_class_agrees():
    a, b = replies(b"550 5.1.1 <b@y>: User unknown\r\n451 5.1.1 odd\r\n")
    assert a.dsn == "5.1.1"
    assert b.dsn == "4.0.0"


def test_split_reply_bytes_and_garbage_skipped():
    p = ReplyParser()
    p.feed(b"garbage line\r\n25")
    assert p.next_reply() is None
    p.feed(b"0 ok\r\n")
    assert p.next_reply().code == 250


def pipelined_tx(lmtp=False, **kw):
    f = Features(esmtp=True, pipelining=True, dsn=True, size=0)
    rcpts = [TxRecipient("b@y", orig_rcpt="B@y", dsn_notify=6), TxRecipient("c@y")]
    return Transaction("a@x", rcpts, f, NAMADDR, lmtp=lmtp, size=123, **kw), rcpts


def test_pipelined_commands_with_dsn_parameters():
    tx, _ = pipelined_tx(dsn_ret=1, dsn_envid="id 1")
    cmds = [line for _, line in tx.commands()]
    assert cmds == ["MAIL FROM:<a@x> SIZE=123 RET=FULL ENVID=id+201",
                    "RCPT TO:<b@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B@y",
                    "RCPT TO:<c@y>", "DATA"]


def test_per_recipient_results_and_remote_reply_quoted():
    tx, rcpts = pipelined_tx()
    tx.commands()
    for r in replies(b"250 ok\r\n550 5.1.1 <b@y>: User unknown\r\n250 ok\r\n354 go\r\n"):
        tx.on_reply(r)
    assert tx.want_body
    assert rcpts[0].outcome.status == BOUNCED and rcpts[0].outcome.dsn == "5.1.1"
    assert rcpts[0].outcome.reason == ("host mx.y[192.0.2.3] said: 550 5.1.1 <b@y>: User unknown "
                                       "(in reply to RCPT TO command)")
    assert tx.end_of_data() == 1
    tx.on_reply(replies(b"250 2.0.0 Ok: queued as X\r\n")[0])
    assert rcpts[1].outcome.status == SENT
    assert rcpts[1].outcome.reason == "250 2.0.0 Ok: queued as X"


def test_mail_4xx_defers_everyone():
    tx, rcpts = pipelined_tx()
    tx.commands()
    for r in replies(b"451 4.3.0 try later\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n"):
        tx.on_reply(r)
    assert {r.outcome.status for r in rcpts} == {DEFERRED}
    assert "(in reply to MAIL FROM command)" in rcpts[0].outcome.reason
    assert not tx.want_body


def test_lmtp_one_reply_per_recipient_after_dot():
    tx, rcpts = pipelined_tx(lmtp=True)
    tx.commands()
    for r in replies(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"):
        tx.on_reply(r)
    assert tx.end_of_data() == 2
    for r in replies(b"250 2.0.0 <b@y> saved\r\n452 4.2.2 <c@y> quota\r\n"):
        tx.on_reply(r)
    assert rcpts[0].outcome.status == SENT
    assert rcpts[1].outcome.status == DEFERRED
    assert "(in reply to end of DATA command)" in rcpts[1].outcome.reason


def test_without_pipelining_one_command_at_a_time():
    f = Features(esmtp=True)
    tx = Transaction("a@x", [TxRecipient("b@y")], f, NAMADDR)
    assert [k for k, _ in tx.commands()] == ["MAIL"]
    assert [k for k, _ in tx.on_reply(replies(b"250 ok\r\n")[0])] == ["RCPT"]
    assert [k for k, _ in tx.on_reply(replies(b"250 ok\r\n")[0])] == ["DATA"]


def test_rejected_recipient_no_data_without_pipelining():
    f = Features(esmtp=True)
    tx = Transaction("a@x", [TxRecipient("b@y")], f, NAMADDR)
    tx.commands()
    tx.on_reply(replies(b"250 ok\r\n")[0])
    assert tx.on_reply(replies(b"550 no\r\n")[0]) == []
    assert tx.done


def test_dot_stuffing_crlf_and_final_dot():
    enc = BodyEncoder()
    out = enc.record(ord("N"), b".hidden") + enc.record(ord("N"), b"plain") + enc.finish()
    assert out == b"..hidden\r\nplain\r\n.\r\n"


def test_long_line_broken_with_crlf_space():
    enc = BodyEncoder(line_limit=10)
    assert enc.record(ord("N"), b"x" * 25) == b"x" * 10 + b"\r\n " + b"x" * 9 + b"\r\n " + b"x" * 6 + b"\r\n"


def test_8bit_part_downgraded_to_quoted_printable():
    enc = BodyEncoder(downgrade=True)
    lines = [b"Subject: x", b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
             b"Content-Transfer-Encoding: 8bit", b"", "caf\u00e9 ok".encode()]
    out = b"".join(enc.record(ord("N"), ln) for ln in lines) + enc.finish()
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in out
    assert b"caf=C3=A9 ok\r\n" in out
    assert b"8bit" not in out


def test_qp_soft_breaks_at_76():
    parts = qp_encode_line(b"a" * 200)
    assert all(len(p) <= 76 for p in parts) and parts[0].endswith(b"=")


def test_notify_words():
    assert notify_param(1) == "NEVER"
    assert notify_param(2 | 8) == "SUCCESS,DELAY"


def test_lhlo_for_lmtp():
    assert SmtpClient(lmtp=True).hello_command("me") == ("LHLO", "LHLO me")


def test_sasl_plain_refused_by_default_options():
    assert choose_mechanism(["PLAIN", "LOGIN"], [], ["noplaintext", "noanonymous"]) is None
    assert choose_mechanism(["LOGIN", "PLAIN"], [], ["noanonymous"]) == "PLAIN"
    assert choose_mechanism(["LOGIN", "PLAIN"], ["login"], ["noanonymous"]) == "LOGIN"


def test_sasl_login_steps():
    c = SaslClient("LOGIN", "u", "p")
    assert c.initial_command() == "AUTH LOGIN"
    assert c.respond("VXNlcm5hbWU6") == "dQ=="
    assert c.respond("UGFzc3dvcmQ6") == "cA=="


def test_sasl_password_lookup_order():
    class T:
        def __init__(self, d): self.d = d
        def lookup(self, k): return self.d.get(k)
    maps = T({"[relay.example]:587": "u1:p:1", "@x.example": "u2:p2"})
    assert lookup_credentials(maps, host="relay.example", nexthop="[relay.example]:587",
                              sender="a@x.example", sender_dependent=False) == ("u1", "p:1")
    assert lookup_credentials(maps, host="relay.example", nexthop="[relay.example]:587",
                              sender="a@x.example", sender_dependent=True) == ("u2", "p2")


def test_nexthop_forms():
    assert parse_nexthop("example.com", 25).mx
    n = parse_nexthop("[mail.example.com]:587", 25)
    assert (n.host, n.port, n.mx) == ("mail.example.com", 587, False)
    assert parse_nexthop("host.example:2525", 25).port == 2525
    assert parse_nexthop("unix:private/dovecot-lmtp", 24, lmtp=True).unix == "private/dovecot-lmtp"
    n = parse_nexthop("inet:127.0.0.1:24", 24, lmtp=True)
    assert (n.host, n.port, n.mx) == ("127.0.0.1", 24, False)
    try:
        parse_nexthop("[broken", 25)
    except RouteError as e:
        assert e.dsn.startswith("5")


def test_mx_preference_order():
    import random
    out = order_mx([(20, "c"), (10, "a"), (10, "b")], random.Random(1))
    assert [p for p, _ in out] == [10, 10, 20] and out[2][1] == "c"


def _records(*recs):
    from pfy.queue.record import encode_record
    return b"".join(encode_record(t, d) for t, d in recs)


def test_encode_records_matches_per_record_encoding_at_any_split():
    from pfy.queue.record import REC_CONT, REC_NORM, REC_DTXT
    recs = [(REC_NORM, b"Subject: x"), (REC_NORM, b""), (REC_NORM, b".dot"),
            (REC_DTXT, b"pad"), (REC_CONT, b"a" * 200), (REC_NORM, b".tail"),
            (REC_NORM, b"y" * 1200), (REC_NORM, b"."), (REC_CONT, b".x"), (REC_NORM, b"")]
    raw = _records(*recs)
    ref = BodyEncoder(998)
    want = b"".join(ref.record(t, d) for t, d in recs if t != REC_DTXT) + ref.finish()
    for split in range(len(raw) + 1):          # every place a read can end
        enc = BodyEncoder(998)
        out1, used = enc.encode_records(raw[:split])
        out2, used2 = enc.encode_records(raw[used:split] + raw[split:])
        assert used2 == len(raw) - used, split
        assert out1 + out2 + enc.finish() == want, split


def test_encode_records_with_downgrade_uses_the_mime_path():
    from pfy.queue.record import REC_NORM
    recs = [(REC_NORM, b"Content-Transfer-Encoding: 8bit"), (REC_NORM, b""),
            (REC_NORM, "caf\u00e9".encode()), (REC_NORM, b".x")]
    ref = BodyEncoder(998, downgrade=True)
    want = b"".join(ref.record(t, d) for t, d in recs) + ref.finish()
    enc = BodyEncoder(998, downgrade=True)
    out, used = enc.encode_records(_records(*recs))
    assert out + enc.finish() == want and b"caf=C3=A9" in want


def test_probe_transaction_has_no_data():
    f = Features(esmtp=True, pipelining=True)
    rcpts = [TxRecipient("b@y"), TxRecipient("c@y")]
    tx = Transaction("a@x", rcpts, f, NAMADDR, probe=True)
    assert [k for k, _ in tx.commands()] == ["MAIL", "RCPT", "RCPT"]
    for r in replies(b"250 ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no\r\n"):
        tx.on_reply(r)
    assert not tx.want_body and tx.awaiting_replies == 0
    assert (rcpts[0].outcome.status, rcpts[0].outcome.reason) == (SENT, "250 2.1.5 Ok")
    assert rcpts[1].outcome.status == BOUNCED and rcpts[1].outcome.diag == "550 5.1.1 no"
