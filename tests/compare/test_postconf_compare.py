"""postconf side by side with Debian's Postfix 3.7 on the same files."""

import shutil
import subprocess

import pytest

from tests.conftest import pfy_bin, postfix_bin
from pfy.config.params import DIFFERS_FROM_POSTFIX, DYNAMIC

MAIN_CF = """\
# tricky main.cf
myorigin = $mydomain
mydomain = example.org
  # a comment inside the value
relayhost = [relay.${mydomain}]:587
mydestination = $myhostname,
    localhost.$mydomain,   localhost
smtpd_banner = $myhostname ESMTP ${mail_name?{$mail_name}:{none}} ${nosuch:fallback}
compatibility_level = 3.6
smtpd_restriction_classes = cls
cls = check_sender_access hash:/x, reject
unknown_thing = 1
owner_request_special = ${{$compatibility_level} <level {3.6} ? {yes} : {no}}
delay_warning_time = 4h
header_checks = regexp:/etc/pfy/header_checks
smtpd_recipient_restrictions = permit_mynetworks, check_policy_service { inet:127.0.0.1:9999, timeout=10s }, reject_unauth_destination
relayhost = [relay2.$mydomain]
smtp_helo_name = $myhostname
myhostname = mx.$mydomain
"""

MASTER_CF = """\
smtp      inet  n       -       y       -       -       smtpd
127.0.0.1:2525 inet n   -       n       -       5       smtpd
  -o smtpd_client_restrictions=permit_mynetworks,reject
  -o { smtpd_banner = hello world }
  -o syslog_name=postfix/$service_name
pickup    unix  n       -       y       60      1       pickup
qmgr      unix  n       -       n       300?    1       qmgr
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
local     unix  -       n       n       -       -       local
mailman   unix  -       n       n       -       -       pipe
  flags=FRX user=list argv=/usr/lib/mailman/bin/postfix-to-mailman.py ${nexthop} ${user} { a b }
very-long-service-name-here unix - n n - - pipe flags=R user=x argv=/bin/cat -o { x = y z } a b c d e f g h i j k l m n o p q r s t
"""

SKIP = set(DIFFERS_FROM_POSTFIX) | set(DYNAMIC) - {"myhostname", "mydomain", "mynetworks", "process_name"}
SKIP |= {"process_id", "mail_version", "daemon_directory", "command_directory",
         "sendmail_path", "newaliases_path", "mailq_path"}


def instance(tmp_path, name, main=MAIN_CF, master=MASTER_CF):
    d = tmp_path / name
    d.mkdir()
    (d / "main.cf").write_text(main)
    (d / "master.cf").write_text(master)
    return d


def run(cmd, d, *args):
    p = subprocess.run([cmd, "-c", str(d), *args], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def lines_without_differences(text):
    # pfy-only parameters are named pfy_* (params.py); Postfix has none.
    return [line for line in text.splitlines()
            if line.split(" =", 1)[0].split("/")[-1] not in SKIP
            and not line.startswith("pfy_")]


def stderr_set(text, d):
    # Postfix prefixes argv[0] and may repeat a warning; compare what is said.
    # It also reads main.cf twice, so its "overriding earlier entry" comes
    # again for the first line with the final value: only ours is compared.
    return {line.split(": ", 1)[1] for line in text.splitlines()
            if ": " in line and "overriding earlier entry" not in line}


@pytest.fixture
def both(tmp_path):
    return postfix_bin("postconf"), pfy_bin("postconf"), instance(tmp_path, "a")


@pytest.mark.parametrize("args", [
    ["-n"], [], ["-d"], ["-nf"],
    ["myorigin", "relayhost", "cls", "nosuch", "mailman_destination_recipient_limit"],
    ["-h", "mydestination", "smtpd_banner"],
    ["-x", "myorigin", "relayhost", "mydestination", "smtpd_banner", "owner_request_special", "cls",
     "relay_domains", "smtpd_relay_restrictions", "mynetworks", "smtputf8_enable"],
    ["-xh", "smtpd_banner", "relayhost"],
    ["-M"], ["-Mf"], ["-M", "smtp/inet", "pickup", "mailman/unix"],
    ["-F"], ["-F", "smtp/inet/command", "mailman"], ["-P"], ["-Px"], ["-H", "-n"],
])
def test_same_output(both, args):
    theirs, ours, d = both
    rc1, out1, err1 = run(theirs, d, *args)
    rc2, out2, err2 = run(ours, d, *args)
    assert rc2 == rc1, err2
    assert lines_without_differences(out2) == lines_without_differences(out1)
    assert stderr_set(err2, d) == stderr_set(err1, d)


@pytest.mark.parametrize("args", [
    ["-e", "myorigin = new", "mydomain=z.example", "brand_new ="],
    ["-X", "relayhost", "cls", "absent"],
    ["-#", "mydestination", "relayhost", "absent"],
    ["-e", "no_equals_sign"],
])
def test_same_edit(tmp_path, args):
    theirs, ours = postfix_bin("postconf"), pfy_bin("postconf")
    a, b = instance(tmp_path, "a", MAIN_CF + "last = no newline"), instance(tmp_path, "b", MAIN_CF + "last = no newline")
    rc1, _, err1 = run(theirs, a, *args)
    rc2, _, err2 = run(ours, b, *args)
    assert rc2 == rc1, err2
    assert (b / "main.cf").read_bytes() == (a / "main.cf").read_bytes()
    assert stderr_set(err2, b) == {line.replace(str(a), str(b)) for line in stderr_set(err1, a)}


def test_bad_main_cf_is_one_fatal_line(both):
    theirs, ours, d = both
    (d / "main.cf").write_text("a = 1\nbad line here\n")
    rc, out, err = run(ours, d, "-n")
    assert rc == 1 and out == ""
    assert err.strip().endswith(f"fatal: {d}/main.cf, line 2: missing '=' after attribute name: \"bad line here\"")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert run(theirs, d, "-n")[0] == 1


# -- master.cf editing: the same bytes as Postfix's postconf --------------

MASTER_EDGES = MASTER_CF + """\
# trailing comment
last unix - - n - - pipe
  # inner comment
  flags=R argv=/bin/x

nonl unix - - n - - smtp -vo x=y -oa=b"""


@pytest.mark.parametrize("args", [
    ["-Me", "smtp/inet=smtp inet n - y - - smtpd -o x=y"],
    ["-Me", "new/unix=new unix - - n - - pipe flags=R user=x argv=/bin/cat ${nexthop}"],
    ["-Me", "relay/unix=foo unix - - n - - smtp", "pickup/unix=pickup unix n - n 60 1 pickup"],
    ["-Me", "sub/inet=sub inet n - y - - smtpd -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }"],
    ["-Me", "*/unix=z unix - - n - - smtp"],
    ["-M", "x/unix=x unix - - n - - smtp"],          # name=value implies -e
    ["-MX", "relay/unix", "last/unix", "nonl/unix", "nosuch/unix"],
    ["-M#", "relay/unix", "mailman/unix", "nonl/unix"],
    ["-Fe", "smtp/inet/chroot=n", "relay/unix/command=smtp -o x=y z"],
    ["-Fe", "last/unix/command=pipe flags=X { a b }", "very-long-service-name-here/unix/wakeup=5?"],
    ["-Fe", "nosuch/inet/private=y"],
    ["-Pe", "relay/unix/syslog_name=foo", "smtp/inet/new=1", "last/unix/x=1", "nonl/unix/x=2"],
    ["-PX", "relay/unix/syslog_name", "nonl/unix/a", "127.0.0.1:2525/inet/smtpd_banner", "smtp/inet/none"],
    # Errors: one fatal line, file untouched.
    ["-Fe", "smtp/inet/private=x"], ["-Fe", "relay/unix/chroot=a b"], ["-Fe", "relay/unix/*=a"],
    ["-Fe", "smtp/inet/priv=y"], ["-Pe", "relay/unix/x=a b"], ["-Pe", "relay/unix/*=a"],
    ["-Me", "a/unix=a unix - - n - -"], ["-Me", "a/unix=a bogus - - n - - x"], ["-Me", "a/unix"],
    ["-M#", "smtp"], ["-MX"], ["-Me"], ["-FX", "smtp/inet/chroot"], ["-MX", "x/y=1"],
])
def test_same_master_edit(tmp_path, args):
    theirs, ours = postfix_bin("postconf"), pfy_bin("postconf")
    a = instance(tmp_path, "a", master=MASTER_EDGES)
    b = instance(tmp_path, "b", master=MASTER_EDGES)
    rc1, out1, err1 = run(theirs, a, *args)
    rc2, out2, err2 = run(ours, b, *args)
    assert rc2 == rc1, err2
    assert (b / "master.cf").read_bytes() == (a / "master.cf").read_bytes()
    assert out2 == out1
    assert stderr_set(err2, b) == {line.replace(str(a), str(b)) for line in stderr_set(err1, a)}
    assert "Traceback" not in err2


@pytest.mark.parametrize("args", [
    ["-M", "smtp/inet", "pickup/", "*/unix"], ["-M", "nosuch"], ["-M", "/x"],
    ["-F", "smtp/inet/foo"], ["-FH", "smtp"], ["-Fh", "smtp/inet/command"], ["-Ff", "*/*/command"],
    ["-P", "pickup", "relay/unix/x"], ["-Mx"], ["-l"], ["-T", "bogus"],
    ["-Xe", "x"], ["-M", "-F"], ["-Mn"], ["-a", "-f"], ["-m", "-e"], ["-C", "bogus"], ["-C", "user", "-n"],
])
def test_same_listing_and_option_errors(both, args):
    theirs, ours, d = both
    rc1, out1, err1 = run(theirs, d, *args)
    rc2, out2, err2 = run(ours, d, *args)
    assert rc2 == rc1, err2
    assert out2 == out1
    assert stderr_set(err2, d) == stderr_set(err1, d)
