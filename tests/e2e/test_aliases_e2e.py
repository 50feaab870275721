"""Aliases and .forward end to end (issue 4 part 1): an instance run by a
throw-away user, aliases built by postalias, mail from sendmail through
pickup, cleanup, qmgr and local; the log reads like Postfix's."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from localusers import local_users, messages_in_maildir, traversable_tmp  # noqa: E402
from test_local_delivery import HOST, QID, sendmail, user_instance  # noqa: E402


@pytest.fixture
def tmp():
    with traversable_tmp() as path:
        yield path


def test_aliases_command_file_loop_and_unknown(tmp):
    with local_users(tmp, 1) as (me,):
        (tmp / "etc").mkdir()
        os.chown(tmp / "etc", me.pw_uid, me.pw_gid)
        etc = tmp / "etc" / "aliases"
        out = tmp / "cmd.out"
        box = tmp / "box"
        for p in (out, box):
            p.touch()
            os.chown(p, me.pw_uid, me.pw_gid)
        etc.write_text(f"postmaster: {me.pw_name}\n"
                       f"staff: {me.pw_name}, \"|cat >> {out}\", {box}\n"
                       "a: b\nb: a\n"
                       "ghost: nosuchuser\n"
                       "fail: \"|echo 5.2.1 mailbox disabled; exit 69\"\n")
        os.chown(etc, me.pw_uid, me.pw_gid)
        with user_instance(tmp, me, home_mailbox="Maildir/",
                           alias_maps=f"lmdb:{etc}", alias_database=f"lmdb:{etc}") as inst:
            p = inst.command("postalias", f"lmdb:{etc}")
            assert p.returncode == 0, p.stderr.decode()
            inst.start()
            sendmail(inst, "staff")
            inst.wait_for_log(rf"{QID}: to=<{me.pw_name}@{HOST}>, orig_to=<staff>, relay=local, "
                              r".*status=sent \(delivered to maildir\)", timeout=30)
            inst.wait_for_log(rf"{QID}: to=<staff@{HOST}>, orig_to=<staff>, relay=local, .*"
                              rf"status=sent \(delivered to command: cat >> {re.escape(str(out))}\)",
                              timeout=30)
            inst.wait_for_log(rf"to=<staff@{HOST}>, orig_to=<staff>, relay=local, .*"
                              rf"status=sent \(delivered to file: {re.escape(str(box))}\)",
                              timeout=30)
            assert out.read_bytes().startswith(b"From ")
            assert b"Delivered-To: staff@" in box.read_bytes()
            sendmail(inst, "postmaster")
            inst.wait_for_log(rf"to=<{me.pw_name}@{HOST}>, orig_to=<postmaster>, .*"
                              r"status=sent \(delivered to maildir\)", timeout=30)
            msgs = messages_in_maildir(Path(me.pw_dir) / "Maildir")
            assert len(msgs) == 2
            sendmail(inst, "a")
            inst.wait_for_log(r"dsn=5\.4\.6, status=bounced \(alias database loop for", timeout=30)
            sendmail(inst, "ghost")
            inst.wait_for_log(r"dsn=5\.1\.1, status=bounced \(unknown user: \"nosuchuser\"\)",
                              timeout=30)
            sendmail(inst, "fail")
            inst.wait_for_log(r"dsn=5\.2\.1, status=bounced \(Command died with status 69: "
                              r"\"echo 5\.2\.1 mailbox disabled; exit 69\"\. "
                              r"Command output: 5\.2\.1 mailbox disabled", timeout=30)
