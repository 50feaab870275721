"""bounce(5) templates and the bounce logfile format."""

import io
import os

import pytest

from pfy.dsn.logfile import StatusRecord, append_records, format_record, read_records
from pfy.dsn.templates import (DEFAULT_TEMPLATES, TemplateError, dump_templates, expand_text,
                               load_templates, parse_template_file, time_lookup)

LOOKUP = time_lookup({"delay_warning_time": 4 * 3600, "maximal_queue_lifetime": 5 * 86400},
                     {"myhostname": "mx.example", "mail_name": "Postfix"}.get)


def test_builtin_texts_are_postfix_s():
    assert expand_text(DEFAULT_TEMPLATES["failure"], LOOKUP)[0] == \
        "This is the mail system at host mx.example."
    delay = expand_text(DEFAULT_TEMPLATES["delay"], LOOKUP)
    assert "Your message could not be delivered for more than 4 hour(s)." in delay
    assert "It will be retried until it is 5 day(s) old." in delay
    assert DEFAULT_TEMPLATES["success"].postmaster_subject is None


def test_template_file_overrides_one_template():
    warnings = []
    t = parse_template_file("/etc/pfy/bounce.cf", """\
# comment
failure_template = <<EOF
Charset: utf-8
From: Mail Robot <MAILER-DAEMON>
Subject: Nicht zustellbar
Postmaster-Subject: Copy

Hallo von $myhostname, $mail_name ${myhostname} $(mail_name).
Kosten: 5 $$
Wartezeit $delay_warning_time_minutes Minuten.
EOF
""", warnings.append)
    f = t["failure"]
    assert (f.charset, f.from_, f.subject, f.postmaster_subject) == (
        "utf-8", "Mail Robot <MAILER-DAEMON>", "Nicht zustellbar", "Copy")
    assert expand_text(f, LOOKUP) == [
        "Hallo von mx.example, Postfix mx.example Postfix.", "Kosten: 5 $",
        "Wartezeit 240 Minuten."]
    assert set(t) == {"failure"} and warnings == []


@pytest.mark.parametrize("body,warning", [
    ("Subject: x\nFoo: y\n\ntext", 'unknown "Foo" header label'),
    ("Subject: \n\ntext", 'empty "Subject" header value'),
    ("Subject: x\n\n", "missing message text"),
    ("Subject: x\n\ncaf\u00e9", "8-bit message text"),
])
def test_bad_template_is_ignored_with_a_warning(body, warning):
    warnings = []
    t = parse_template_file("f", f"failure_template = <<EOF\n{body}\nEOF\n", warnings.append)
    assert "failure" not in t
    assert any(warning in w for w in warnings), warnings


def test_postmaster_subject_inapplicable_to_success():
    warnings = []
    t = parse_template_file("f", "success_template = <<EOF\nPostmaster-Subject: x\n\nt\nEOF\n",
                            warnings.append)
    assert t == {} and "inapplicable" in warnings[0]


def test_unknown_template_name_and_syntax_errors():
    warnings = []
    assert parse_template_file("f", "bogus_template = x\n", warnings.append) == {}
    assert "unknown template name: bogus_template" in warnings[0]
    with pytest.raises(TemplateError, match="f, line 1: missing '='"):
        parse_template_file("f", "no equals here\n")
    with pytest.raises(TemplateError, match="missing end marker"):
        parse_template_file("f", "failure_template = <<\n")


def test_undefined_name_is_fatal():
    t = parse_template_file("f", "verify_template = <<EOF\nSubject: s\n\n$nonesuch\nEOF\n")
    with pytest.raises(TemplateError, match="undefined \\$name in verify template"):
        expand_text(t["verify"], LOOKUP)
    with pytest.raises(TemplateError, match="unrecognized suffix"):
        expand_text(parse_template_file(
            "f", "verify_template = <<EOF\n\n$delay_warning_time_fortnights\nEOF\n")["verify"],
            LOOKUP)


def test_dump_round_trips(tmp_path):
    p = tmp_path / "bounce.cf"
    p.write_text(dump_templates(DEFAULT_TEMPLATES))
    loaded = load_templates(os.fspath(p))
    for cls, t in DEFAULT_TEMPLATES.items():
        got = loaded[cls]
        assert (got.charset, got.from_, got.subject, got.postmaster_subject, got.text) == (
            t.charset, t.from_, t.subject, t.postmaster_subject, t.text)


def test_logfile_format_is_postfix_s():
    rec = StatusRecord("Joe User@example.com", "5.1.1", "failed", "no\nsuch user",
                       orig_rcpt="alias@example.com", offset=123,
                       dsn_orcpt="rfc822;alias@example.com", notify=4,
                       diag_type="smtp", diag_text="550 no", mta_type="dns", mta_name="mx")
    assert format_record(rec) == (
        b'recipient="Joe User"@example.com\norig_rcpt=alias@example.com\noffset=123\n'
        b"dsn_orig_rcpt=rfc822;alias@example.com\nnotify_flags=4\nstatus=5.1.1\n"
        b"action=failed\ndiag_type=smtp\ndiag_text=550 no\nmta_type=dns\nmta_name=mx\n"
        b"reason=no?such user\n\n")
    assert format_record(StatusRecord("", "5.0.0", "failed", "x")).startswith(b"recipient=<>\n")


def test_logfile_round_trip_and_tolerant_reader(tmp_path):
    p = os.fspath(tmp_path / "defer" / "ABC")
    recs = [StatusRecord("a@x", "4.0.0", "delayed", "r1", offset=10),
            StatusRecord("b@x", "4.4.1", "delayed", "r2", notify=8)]
    append_records(p, recs[:1])
    append_records(p, recs[1:])
    assert list(read_records(p)) == recs
    # Postfix < 2.0 lines, unknown names and garbage are skipped.
    legacy = io.BytesIO(b"<a@x>: old style\nrecipient=a@x\nfoo=bar\nstatus=4.0.0\n"
                        b"offset=zz\nreason=r\n\nnot a record\n\nrecipient=c@x\nreason=last")
    got = list(read_records(legacy))
    assert [(r.recipient, r.reason, r.offset) for r in got] == [("a@x", "r", 0), ("c@x", "last", 0)]


def test_reader_accepts_qmgr_s_old_writer_output(tmp_path):
    from pfy.dsn.logfile import append_status, format_status
    p = os.fspath(tmp_path / "x")
    append_status(p, [format_status("a@x", "", 5, "", 0, "5.0.0", "failed", "why")], fsync=False)
    [r] = read_records(p)
    assert (r.recipient, r.offset, r.status, r.action, r.reason) == ("a@x", 5, "5.0.0", "failed", "why")


def test_showq_reads_our_defer_log(tmp_path):
    from pfy.daemons.showq import read_defer_log
    p = os.fspath(tmp_path / "d")
    append_records(p, [StatusRecord("a b@x", "4.0.0", "delayed", "try later")])
    assert read_defer_log(p) == [('"a b"@x', "try later")]
