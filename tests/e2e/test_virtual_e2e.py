"""Issue 7 parts 1 and 2 end to end: virtual mailbox domains and virtual
alias domains through sendmail, pickup, cleanup, trivial-rewrite, qmgr and
virtual (or error), each its own process under master.

An ordinary-user instance (as root: a throw-away user runs the whole
instance) delivers Maildir and mbox mailboxes, catch-alls and extensions,
bounces unknown users, and refuses table results that would leave
virtual_mailbox_base.  A root instance writes every mailbox as the mapped
uid and gid.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from instance import Instance
from localusers import local_users, messages_in_maildir, messages_in_mbox, traversable_tmp

QID = r"[0-9A-Za-z]+"


@pytest.fixture
def tmp_path():
    """Not pytest's tmp_path: as root, instance.py moves an instance under
    pytest's base to a root-owned /tmp folder, which the ordinary user these
    tests run the instance as cannot write; and pytest resets its base to
    0700 (see localusers.traversable_tmp)."""
    with traversable_tmp() as path:
        yield path


def sendmail(inst: Instance, *args: str, body: bytes = b"Subject: t\n\nhi\n") -> None:
    p = inst.command("sendmail", *args, input=body)
    assert p.returncode == 0, p.stderr.decode()


def write_tables(root: Path) -> dict[str, str]:
    (root / "vmailbox").write_text(
        "alice@v.example     v.example/alice/\n"
        "bob@v.example       v.example/bob\n"
        "@catch.example      catch/all/\n"
        "evil@v.example      ../../escape/\n"
        "link@v.example      linked/box/\n")
    (root / "valias").write_text(
        "info@a.example      alice@v.example\n"
        "sales@a.example     alice@v.example, bob@v.example\n"
        "@wild.example       bob@v.example\n")
    return {"vmailbox": f"texthash:{root}/vmailbox", "valias": f"texthash:{root}/valias"}


def virtual_main_cf(base: Path, tables: dict[str, str], uid: int, gid: int) -> dict[str, str]:
    return {
        "virtual_mailbox_domains": "v.example, catch.example",
        # proxy: as Postfix admins write it (proxymap for chrooted
        # processes); pfy opens the table itself before the jail.
        "virtual_mailbox_maps": "proxy:" + tables["vmailbox"],
        "virtual_mailbox_base": str(base),
        "virtual_uid_maps": f"static:{uid}",
        "virtual_gid_maps": f"static:{gid}",
        "virtual_minimum_uid": "100",
        "virtual_alias_domains": "a.example, wild.example",
        "virtual_alias_maps": "proxy:" + tables["valias"],
        "recipient_delimiter": "+",
    }


def sent_line(rcpt: str, what: str, orig: str | None = None) -> str:
    orig_part = f", orig_to=<{re.escape(orig)}>" if orig else ""
    return (rf"postfix/virtual\[\d+\]: {QID}: to=<{re.escape(rcpt)}>{orig_part}, relay=virtual, "
            rf"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, "
            rf"status=sent \({re.escape(what)}\)")


def _ordinary(tmp_path: Path):
    """(pw, Instance kwargs) for an instance run by an ordinary user."""
    return local_users(tmp_path, 1, prefix="pfyv")


def test_virtual_mailboxes_as_an_ordinary_user(tmp_path):
    with _ordinary(tmp_path) as (me,):
        root = tmp_path / "inst"
        root.mkdir()
        os.chown(root, me.pw_uid, me.pw_gid)
        base = tmp_path / "vmail"
        base.mkdir()
        os.chown(base, me.pw_uid, me.pw_gid)
        tables = write_tables(tmp_path)
        main_cf = virtual_main_cf(base, tables, me.pw_uid, me.pw_gid)
        with Instance(root, main_cf=main_cf, user=me.pw_name) as inst:
            inst.start()
            sendmail(inst, "alice@v.example")
            inst.wait_for_log(sent_line("alice@v.example", "delivered to maildir"), timeout=30)
            sendmail(inst, "bob+lists@v.example",
                     body=b"Subject: q\n\nFrom the start\nhi\n")
            inst.wait_for_log(sent_line("bob+lists@v.example", "delivered to mailbox"),
                              timeout=30)
            sendmail(inst, "whoever@catch.example")
            inst.wait_for_log(sent_line("whoever@catch.example", "delivered to maildir"),
                              timeout=30)
            sendmail(inst, "nobody@v.example")
            inst.wait_for_log(
                rf"postfix/virtual\[\d+\]: {QID}: to=<nobody@v\.example>, relay=virtual, .*"
                r"dsn=5\.1\.1, status=bounced \(unknown user: \"nobody@v\.example\"\)", timeout=30)

            (msg,) = messages_in_maildir(base / "v.example" / "alice")
            head = msg.split(b"\n\n", 1)[0].split(b"\n")
            assert head[0] == f"Return-Path: <{me.pw_name}@localhost.localdomain>".encode()
            assert b"Delivered-To: alice@v.example" in head
            (mb,) = messages_in_mbox(base / "v.example" / "bob")
            assert b"Delivered-To: bob+lists@v.example\n" in mb and b"\n>From the start\n" in mb
            assert len(messages_in_maildir(base / "catch" / "all")) == 1

            # A table result that climbs out of the base: deferred, warned, not written.
            sendmail(inst, "evil@v.example")
            inst.wait_for_log(r"warning: .*recipient evil@v\.example: mailbox path "
                              r"\"\.\./\.\./escape/\".* refused", timeout=30)
            inst.wait_for_log(r"to=<evil@v\.example>.*dsn=4\.3\.5, status=deferred "
                              r"\(mail system configuration error\)", timeout=30)
            assert not (tmp_path / "escape").exists()

            # A symlink planted below the base: refused the same way.
            outside = tmp_path / "outside"
            outside.mkdir()
            os.chown(outside, me.pw_uid, me.pw_gid)
            (base / "linked").symlink_to(outside)
            sendmail(inst, "link@v.example")
            inst.wait_for_log(r"to=<link@v\.example>.*status=deferred", timeout=30)
            inst.wait_for_log(r"warning: .*link@v\.example: mailbox path .* symbolic link",
                              timeout=5)
            assert list(outside.iterdir()) == []


def test_virtual_alias_domains(tmp_path):
    with _ordinary(tmp_path) as (me,):
        root = tmp_path / "inst"
        root.mkdir()
        os.chown(root, me.pw_uid, me.pw_gid)
        base = tmp_path / "vmail"
        base.mkdir()
        os.chown(base, me.pw_uid, me.pw_gid)
        tables = write_tables(tmp_path)
        with Instance(root, main_cf=virtual_main_cf(base, tables, me.pw_uid, me.pw_gid),
                      user=me.pw_name) as inst:
            inst.start()
            sendmail(inst, "info@a.example")
            inst.wait_for_log(sent_line("alice@v.example", "delivered to maildir",
                                        "info@a.example"), timeout=30)
            sendmail(inst, "sales@a.example")
            inst.wait_for_log(sent_line("alice@v.example", "delivered to maildir",
                                        "sales@a.example"), timeout=30)
            inst.wait_for_log(sent_line("bob@v.example", "delivered to mailbox",
                                        "sales@a.example"), timeout=30)
            sendmail(inst, "anything@wild.example")        # catch-all alias
            inst.wait_for_log(sent_line("bob@v.example", "delivered to mailbox",
                                        "anything@wild.example"), timeout=30)
            # Unknown in an alias domain: the error transport bounces it.
            sendmail(inst, "stranger@a.example")
            inst.wait_for_log(
                rf"postfix/error\[\d+\]: {QID}: to=<stranger@a\.example>, relay=none, .*"
                r"dsn=5\.\d\.\d, status=bounced \(User unknown in virtual alias table\)",
                timeout=30)
            assert len(messages_in_maildir(base / "v.example" / "alice")) == 2
            assert len(messages_in_mbox(base / "v.example" / "bob")) == 2


def test_root_instance_writes_as_the_mapped_uid(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: delivery as the mapped uid")
    uid = gid = 4242 + os.getpid() % 1000      # numeric ids without a passwd entry
    base = tmp_path / "vmail"
    base.mkdir()
    os.chown(base, uid, gid)
    tables = write_tables(tmp_path)
    os.chmod(tmp_path, 0o755)
    with Instance(tmp_path / "inst", main_cf=virtual_main_cf(base, tables, uid, gid)) as inst:
        inst.start()
        sendmail(inst, "alice@v.example")
        sendmail(inst, "bob@v.example")
        inst.wait_for_log(sent_line("alice@v.example", "delivered to maildir"), timeout=30)
        inst.wait_for_log(sent_line("bob@v.example", "delivered to mailbox"), timeout=30)
        (path,) = (base / "v.example" / "alice" / "new").iterdir()
        for p in (path, base / "v.example" / "bob", base / "v.example" / "alice"):
            st = p.stat()
            assert (st.st_uid, st.st_gid) == (uid, gid), p
        # virtual itself runs as root (master.cf unpriv n); only the child wrote.
        assert any(cmd.split()[0].endswith("virtual") for _, cmd in inst.children())
