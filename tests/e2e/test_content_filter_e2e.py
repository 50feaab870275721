"""Issue 7 part 5: content_filter through a pipe(8) filter that re-injects
with our sendmail, FILTER_README's "simple" setup, end to end:

    SMTP -> smtpd (content_filter = filter:dummy, no_address_mappings)
         -> cleanup (REC_FILT) -> qmgr -> pipe "filter" -> filter script
         -> sendmail -G -i -f ${sender} -- ${recipient}
         -> pickup (-o content_filter= -o receive_override_options=)
         -> cleanup (virtual alias mapping now) -> qmgr -> virtual

The filtered copy must arrive once, with the filter's header once (no
loop), and address mappings must happen after the filter only.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import textwrap
from pathlib import Path


from instance import Instance
from localusers import local_users, messages_in_maildir, traversable_tmp

from tests.conftest import pfy_bin

PYTHON = "/usr/bin/python3"

# FILTER_README's filter script, in Python and without a shell.
FILTER = """
import subprocess, sys
args = sys.argv[1:]
if len(args) < 3 or args[0] != "-f" or "--" not in args:
    sys.exit(64)                       # EX_USAGE
sender, rcpts = args[1], args[args.index("--") + 1:]
data = sys.stdin.buffer.read()
data = b"X-Content-Filtered: by the test filter\\n" + data
p = subprocess.run([{sendmail!r}, "-G", "-i", "-f", sender, "--", *rcpts], input=data)
sys.exit(0 if p.returncode == 0 else 75)   # EX_TEMPFAIL: Postfix retries later
"""


@contextlib.contextmanager
def ordinary_instance(tmp_path: Path, main_cf: dict[str, str]):
    if os.geteuid() != 0:
        import pwd
        with Instance(tmp_path / "inst", main_cf=main_cf) as inst:
            yield inst, pwd.getpwuid(os.geteuid())
        return
    # tmp_path is a traversable_tmp() folder, not pytest's: Instance() would
    # move an instance under pytest's base to a root-owned /tmp folder (see
    # instance.py), and the instance's user could not read files there.
    with local_users(tmp_path, 1, prefix="pfyf") as (me,):
        root = tmp_path / "inst"
        root.mkdir()
        os.chown(root, me.pw_uid, me.pw_gid)
        with Instance(root, main_cf=main_cf, user=me.pw_name) as inst:
            yield inst, me


def test_simple_content_filter_reinjects_without_loops():
    with traversable_tmp() as tmp_path:
        _simple_content_filter(tmp_path)


def _simple_content_filter(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(mode=0o755)
    filt = bin_dir / "filter"
    filt.write_text(f"#!{PYTHON}\n" + textwrap.dedent(FILTER.format(sendmail=pfy_bin("sendmail"))))
    filt.chmod(0o755)
    base = tmp_path / "vmail"
    base.mkdir()
    (tmp_path / "vmailbox").write_text("alice@v.example v.example/alice/\n")
    (tmp_path / "valias").write_text("info@v.example alice@v.example\n")
    main_cf = {
        "content_filter": "filter:dummy",
        "receive_override_options": "no_address_mappings",
        "virtual_mailbox_domains": "v.example",
        "virtual_mailbox_maps": f"texthash:{tmp_path}/vmailbox",
        "virtual_alias_maps": f"texthash:{tmp_path}/valias",
        "virtual_mailbox_base": str(base),
        "virtual_gid_maps": "static:0",                 # replaced below
        "virtual_uid_maps": "static:0",
        "filter_destination_recipient_limit": "10",
        "alias_maps": "",                 # smtpd would open /etc/aliases.lmdb
    }
    with ordinary_instance(tmp_path, main_cf) as (inst, me):
        os.chown(base, me.pw_uid, me.pw_gid)
        inst.set_main_cf(virtual_uid_maps=f"static:{me.pw_uid}",
                         virtual_gid_maps=f"static:{me.pw_gid}")
        text = (inst.config_dir / "master.cf").read_text()
        # The re-injection path: pickup must neither filter again nor skip
        # the address mappings the first pass left out (FILTER_README).
        text = re.sub(r"^(pickup\s.*)$", r"\1\n  -o content_filter=\n  -o receive_override_options=",
                      text, count=1, flags=re.M)
        text += textwrap.dedent(f"""
            filter    unix  -       n       n       -       10      pipe
              flags=Rq user={me.pw_name} null_sender=
              argv={filt} -f ${{sender}} -- ${{recipient}}
        """)
        (inst.config_dir / "master.cf").write_text(text)
        inst.start()
        try:
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
                s.sendmail("sender@remote.example", ["info@v.example"],
                           b"Subject: filter me\r\n\r\nhello\r\n")
        except (OSError, smtplib.SMTPException) as exc:
            raise AssertionError(f"SMTP: {exc!r}; maillog:\n{inst.log()}") from None
        # Filtered: the pipe line for the original recipient (no mapping yet).
        inst.wait_for_log(r"postfix/pipe\[\d+\]: \w+: to=<info@v\.example>, relay=filter, .*"
                          r"status=sent \(delivered via filter service\)", timeout=40)
        # Re-injected, mapped, delivered once.
        inst.wait_for_log(r"postfix/virtual\[\d+\]: \w+: to=<alice@v\.example>, "
                          r"orig_to=<info@v\.example>, relay=virtual, .*status=sent", timeout=40)
        inst.wait_until(lambda: messages_in_maildir(base / "v.example" / "alice"), timeout=15)
        (msg,) = messages_in_maildir(base / "v.example" / "alice")
        assert msg.count(b"X-Content-Filtered: ") == 1
        assert len(re.findall(r"relay=filter", inst.log())) == 1, "filtered more than once"
