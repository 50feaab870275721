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
