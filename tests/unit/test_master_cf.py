"""master.cf parsing (master(5))."""

import pytest

from pfy.config import ConfigError
from pfy.config.master_cf import parse_master_text

TEXT = """\
# service type  private unpriv  chroot  wakeup  maxproc command
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  # a comment inside the entry
  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
qmgr      unix  n       -       n       300?    1       qmgr -v
mailman   unix  -       n       n       -       -       pipe
  flags=FRX user=list argv=/usr/bin/x ${nexthop} { a b }
"""


def test_entries():
    smtp, sub, qmgr, mailman = parse_master_text(TEXT, "/m/master.cf")
    assert (smtp.service, smtp.type, smtp.private, smtp.unpriv, smtp.chroot) == ("smtp", "inet", False, True, True)
    assert smtp.maxproc is None and smtp.wakeup == 0 and smtp.line == 2
    assert sub.overrides == {"syslog_name": "postfix/submission",
                             "smtpd_client_restrictions": "permit_sasl_authenticated, reject"}
    assert sub.args == []
    assert (qmgr.wakeup, qmgr.wakeup_conditional, qmgr.maxproc, qmgr.args) == (300, True, 1, ["-v"])
    assert mailman.args == ["flags=FRX", "user=list", "argv=/usr/bin/x", "${nexthop}", "a b"]
    assert mailman.name == "mailman/unix"


@pytest.mark.parametrize("line, words", [
    ("smtp inet n - n - -", "line 2: bad field count"),
    ("smtp bogus n - n - - smtpd", 'line 2: invalid type field "bogus"'),
    ("smtp inet x - n - - smtpd", 'invalid private field "x"'),
    ("smtp inet n - n abc - smtpd", 'invalid wakeup field "abc"'),
    ("smtp inet n - n - -5 smtpd", 'invalid process_limit field "-5"'),
    ("smtp inet n - n - - smtpd -o foo", 'need "-o name=value"'),
])
def test_errors_name_file_and_line(line, words):
    with pytest.raises(ConfigError) as info:
        parse_master_text("# c\n" + line + "\n", "/m/master.cf")
    assert str(info.value).startswith("/m/master.cf: line 2: ")
    assert words in str(info.value)


def test_shipped_master_cf_parses():
    from pathlib import Path
    path = Path(__file__).parents[2] / "master.cf"
    entries = parse_master_text(path.read_text(), str(path))
    names = {e.name for e in entries}
    for want in ("smtp/inet", "pickup/unix", "cleanup/unix", "qmgr/unix", "rewrite/unix",
                 "bounce/unix", "defer/unix", "trace/unix", "showq/unix", "smtp/unix",
                 "relay/unix", "error/unix", "retry/unix", "discard/unix", "local/unix",
                 "virtual/unix", "lmtp/unix"):
        assert want in names, want


def test_shipped_files_are_package_data():
    """The top-level files are symlinks into pfy/data/, which a non-editable
    `pip install .` copies (checked by hand in a venv; see INTERNALS.md)."""
    import os
    from pathlib import Path
    from pfy.config import shipped_main_cf, shipped_master_cf
    root = Path(__file__).parents[2]
    for name, path in (("master.cf", shipped_master_cf()), ("main.cf", shipped_main_cf())):
        assert os.path.isfile(path) and Path(path).parent.name == "data"
        assert (root / name).resolve() == Path(path).resolve()


def test_shipped_master_cf_matches_the_daemons():
    from pfy.config import shipped_master_cf
    from pfy.config.master_cf import parse_master_cf
    entries = {e.name: e for e in parse_master_cf(shipped_master_cf())}
    # Triggered daemons: public/qmgr and public/pickup as Postfix 3.x ships them.
    for name in ("qmgr/unix", "pickup/unix"):
        assert entries[name].maxproc == 1 and not entries[name].private
    # Deliveries as the recipient need root: unprivileged "n".
    assert not entries["local/unix"].unpriv and not entries["virtual/unix"].unpriv
    for name in ("smtp/inet", "cleanup/unix", "rewrite/unix", "bounce/unix", "defer/unix",
                 "trace/unix", "showq/unix", "smtp/unix", "relay/unix", "error/unix",
                 "retry/unix", "discard/unix", "lmtp/unix", "anvil/unix"):
        assert name in entries, name
    # submission/submissions are commented out exactly as Postfix 3.7 ships them.
    text = open(shipped_master_cf()).read()
    assert "#submission inet n       -       y       -       -       smtpd\n#  -o syslog_name=postfix/submission\n" in text
    assert "#submissions     inet  n       -       y       -       -       smtpd\n#  -o syslog_name=postfix/submissions\n#  -o smtpd_tls_wrappermode=yes\n" in text
    assert "#mailman   unix  -       n       n       -       -       pipe\n" in text
