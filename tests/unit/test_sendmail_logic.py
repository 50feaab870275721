"""sendmail's pure parts: options, address lists, -t extraction, the content
copy loop, the maildrop record encoding and the main.cf fast path."""

import io

import pytest

from pfy.cli import postdrop, sendmail
from pfy.cli.sendmail import (
    DEL_REQ_FLAG_RECORD, EX_USAGE, HeaderExtractor, UsageError, copy_content,
    parse_addresses, parse_args, read_settings,
)


# -- options ---------------------------------------------------------------

def test_options_stop_at_first_recipient_like_postfix_getopt():
    o = parse_args(["x", "-f", "bob"])
    assert o.recipients == ["x", "-f", "bob"] and o.sender is None


@pytest.mark.parametrize("argv, attr, want", [
    (["-t", "-i"], "extract", True),
    (["-ti"], "dot_ends", False),
    (["-oi"], "dot_ends", False),
    (["-fbob"], "sender", "bob"),
    (["-f", "bob"], "sender", "bob"),
    (["-r", "bob"], "sender", "bob"),
    (["-F", "Bob B"], "full_name", "Bob B"),
    (["-N", "success,delay"], "dsn_notify", 2 | 8),
    (["-N", "never"], "dsn_notify", 1),
    (["-R", "hdrs"], "dsn_ret", 2),
    (["-V", "env-1"], "dsn_envid", "env-1"),
    (["-B", "8BITMIME"], "encoding", "8bit"),
    (["-B", "7BIT"], "encoding", "7bit"),
    (["-C", "/x/main.cf"], "config_dir", "/x"),
    (["-C", "/x"], "config_dir", "/x"),
    (["-G"], "rewrite_context", "remote"),
    (["-bi"], "mode", "newaliases"),
    (["-I"], "mode", "newaliases"),
    (["-bp"], "mode", "mailq"),
    (["-q"], "mode", "flushq"),
    (["-bs"], "mode", "user"),
    (["-q30m"], "qtime", "30m"),
    (["-XV"], "verp", ""),
    (["-XV-="], "verp", "-="),
    (["-oAhash:/x"], "alias_database", "hash:/x"),
])
def test_option_table(argv, attr, want):
    got = getattr(parse_args(argv + ["rcpt"] if attr not in ("mode", "qtime") else argv), attr)
    assert got == want, f"{argv}: got {got!r} want {want!r}"


def test_ignored_options_like_postfix():
    o = parse_args(["-o", "x", "val", "-om", "-o7", "-U", "-m", "-h", "5", "-L", "lbl", "y"])
    # "-o x" takes one argument only: "val" is the first recipient (sendmail.c).
    assert o.recipients == ["val", "-om", "-o7", "-U", "-m", "-h", "5", "-L", "lbl", "y"]


def test_one_v_asks_for_a_delivery_report():
    o = parse_args(["-v", "a"])
    assert o.trace_flags == DEL_REQ_FLAG_RECORD and o.verbose == 0


@pytest.mark.parametrize("argv, message", [
    (["-Z"], "invalid option -- 'Z'"),
    (["-f"], "option requires an argument -- 'f'"),
    (["-B", "bogus"], "-B option needs 8BITMIME or 7BIT"),
    (["-bz"], "unsupported: -bz"),
    (["-t", "-bp"], "-t can be used only in delivery mode"),
    (["-n"], "-n option not supported"),
    (["-bv", "-t"], "-t option cannot be used with -bv"),
    (["-qX"], "-qX is not implemented"),
    (["-oA"], "-oA requires pathname"),
])
def test_usage_errors(argv, message):
    with pytest.raises(UsageError) as e:
        parse_args(argv)
    assert message in str(e.value) and e.value.status == EX_USAGE


def test_bad_dsn_values_are_warnings_not_errors():
    o = parse_args(["-N", "bogus", "-R", "bogus", "a"])
    assert o.dsn_notify == 0 and o.dsn_ret == 0
    assert "bad -N option value -- ignored" in o.warnings
    assert "bad -R option value -- ignored" in o.warnings


def test_never_cannot_mix_with_other_notify_words():
    assert sendmail.dsn_notify_mask("never,success") == 0


# -- addresses -------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    # From Debian's Postfix sendmail -t on the same header (HEADER EXTRACTED).
    ('Alice <alice@x>, "b c"@y, grp: d@e, f@g;', ["alice@x", "b c@y", "d@e", "f@g"]),
    ("undisclosed-recipients:;", []),
    ("a@x (comment, with comma), b@y", ["a@x", "b@y"]),
    ("<@relay.example:a@x>", ["a@x"]),
    ('"Doe, John" <jd@x>', ["jd@x"]),
    ("bob", ["bob"]),
    ("", []),
])
def test_parse_addresses(text, want):
    got = parse_addresses(text)
    assert got == want, f"got {got} want {want}"


# -- -t extraction ---------------------------------------------------------

def extract(lines):
    x = HeaderExtractor()
    for line in lines:
        if not x.feed(line):
            break
    return x.finish()


def test_to_cc_bcc_are_extracted_and_folding_is_followed():
    assert extract([b"To: a@x,", b"  b@x", b"Cc: c@x", b"Bcc: d@x", b"Subject: s",
                    b"", b"To: body@x"]) == ["a@x", "b@x", "c@x", "d@x"]


def test_resent_headers_win_when_present():
    assert extract([b"To: a@x", b"Resent-To: r@x", b"Resent-Bcc: rb@x", b"Cc: c@x",
                    b""]) == ["r@x", "rb@x"]


def test_header_ends_at_a_non_header_line():
    assert extract([b"To: a@x", b"this is body text", b"To: b@x"]) == ["a@x"]


def test_header_size_limit_is_enforced():
    x = HeaderExtractor(header_size_limit=100)
    x.feed(b"To: a@x")
    with pytest.raises(ValueError, match="safety limit"):
        for _ in range(20):
            x.feed(b"  , b@x")


# -- content copy ----------------------------------------------------------

class Sink:
    def __init__(self):
        self.records = []

    def record(self, rtype, data):
        self.records.append((chr(rtype), data))


def copy(data, limit=2048, fix="always", dot=True, extractor=None):
    s = Sink()
    copy_content(io.BufferedReader(io.BytesIO(data)), s, limit, fix, dot, extractor)
    return s.records


def test_crlf_and_lf_give_the_same_records():
    assert copy(b"a\r\nb\r\n") == copy(b"a\nb\n") == [("N", b"a"), ("N", b"b")]


def test_lone_dot_ends_input_unless_i():
    assert copy(b"a\n.\nb\n") == [("N", b"a")]
    assert copy(b"a\r\n.\r\nb\n") == [("N", b"a")]
    assert copy(b"a\n.\nb\n", dot=False) == [("N", b"a"), ("N", b"."), ("N", b"b")]


def test_long_lines_become_L_pieces_and_a_dot_piece_does_not_end():
    got = copy(b"x" * 10 + b"\n.\n", limit=4, dot=True)
    assert got == [("L", b"xxxx"), ("L", b"xxxx"), ("N", b"xx")]
    # A "." that is the tail of a long line is not a lone dot.
    assert copy(b"xxxx.\nz\n", limit=4) == [("L", b"xxxx"), ("N", b"."), ("N", b"z")]


def test_leading_from_lines_are_dropped():
    assert copy(b"From a Mon\n>From b\nSubject: x\n\nFrom c\n") == [
        ("N", b"Subject: x"), ("N", b""), ("N", b"From c")]


def test_last_line_without_newline_is_kept():
    assert copy(b"a\nb") == [("N", b"a"), ("L", b"b")]


def test_strict_line_endings_follow_the_first_line():
    assert copy(b"a\nb\r\n", fix="strict") == [("N", b"a"), ("N", b"b\r")]
    assert copy(b"a\r\nb\r\n", fix="never") == [("N", b"a\r"), ("N", b"b\r")]


def test_extractor_sees_the_header_while_content_streams():
    x = HeaderExtractor()
    recs = copy(b"To: a@x\r\nSubject: s\r\n\r\nTo: b@x\r\n", extractor=x)
    assert x.finish() == ["a@x"] and len(recs) == 4


# -- records and settings --------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 70000])
def test_maildrop_record_encoding_matches_the_queue_codec(n):
    from pfy.queue.record import encode_record
    data = b"z" * n
    assert postdrop.encode_record(ord("N"), data) == encode_record(ord("N"), data)


def test_settings_defaults_match_the_registry():
    from pfy.config import params
    for name, value in sendmail.SETTINGS_DEFAULTS.items():
        assert params.PARAMS[name].default == value, name


def test_read_settings_fast_path_and_expansion(tmp_path):
    (tmp_path / "main.cf").write_text(
        "# comment\nqueue_directory = /q\n  /continued\nline_length_limit = 100\n"
        "queue_directory = /var/q\n")
    s = read_settings(str(tmp_path))
    assert s["queue_directory"] == "/var/q" and s["line_length_limit"] == 100
    (tmp_path / "main.cf").write_text("data_directory = /d\nqueue_directory = $data_directory/q\n")
    assert read_settings(str(tmp_path))["queue_directory"] == "/d/q"


def test_maildrop_names_are_random_and_recognised():
    names = {postdrop._random_name() for _ in range(50)}
    assert len(names) == 50 and all(postdrop.is_maildrop_name(n) for n in names)
    assert not postdrop.is_maildrop_name("3F2A81C0B1")


# -- authorized_submit_users (pfy/cli/_acl.py, Postfix user_acl.c) ----------

from pfy.cli import _acl  # noqa: E402


@pytest.mark.parametrize("acl, name, want", [
    ("static:anyone", "alice", True),
    ("static:nobody", "alice", True),          # user_acl.c: any "static:" permits
    ("alice, bob", "alice", True),
    ("alice, bob", "carol", False),
    ("!alice, static:anyone", "alice", False),
    ("!alice, static:anyone", "bob", True),
    ("inline:{alice=ok}", "alice", True),
    ("inline:{alice=ok}", "bob", False),
    ("!unknown, static:anyone", "unknown", False),
    ("", "alice", False),                      # an empty list permits no one
])
def test_user_acl_semantics(acl, name, want):
    got = _acl.check_user_acl(acl, name)
    assert got is want, f"{acl!r} {name}: got {got} want {want}"


def test_uid_without_password_entry_is_unknown():
    assert _acl.user_name(4242, {0: "root"}) == "unknown"
    assert _acl.check_user_acl_byuid("root", 4242, names={0: "root"}) == "unknown"
    assert _acl.check_user_acl_byuid("root", 0, names={0: "root"}) is None


def test_sendmail_refuses_a_user_not_on_the_list(tmp_path):
    import os
    import pwd
    me = pwd.getpwuid(os.getuid()).pw_name
    (tmp_path / "maildrop").mkdir()
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\n"
                                      f"authorized_submit_users = !{me}, static:anyone\n")
    said = []
    rc = sendmail.run(["-C", str(tmp_path), "bob"], "sendmail",
                      io.BufferedReader(io.BytesIO(b"x\n")), lambda s, m: said.append((s, m)))
    assert rc == 77 and said == [("fatal", f"User {me}({os.getuid()}) is not allowed "
                                  "to submit mail")], said
    assert not list((tmp_path / "maildrop").iterdir())


def test_sendmail_bad_acl_table_is_one_line(tmp_path):
    (tmp_path / "maildrop").mkdir()
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\n"
                                      f"authorized_submit_users = nosuchtype:/x\n")
    said = []
    rc = sendmail.run(["-C", str(tmp_path), "bob"], "sendmail",
                      io.BufferedReader(io.BytesIO(b"x\n")), lambda s, m: said.append((s, m)))
    assert rc in (75, 78) and len(said) == 1 and said[0][0] == "fatal", said
