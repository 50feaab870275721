"""Issue 7 part 3 end to end: pipe(8) services declared in master.cf, chosen
by transport_maps: argv= macros, flags, one invocation per recipient or all
recipients at once, each sysexits class, a command that hangs, and (as
root) the command running as user=."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import textwrap
from pathlib import Path

import pytest

from instance import Instance
from localusers import local_users, traversable_tmp

QID = r"[0-9A-Za-z]+"
PYTHON = "/usr/bin/python3"

RECORDER = """
import json, os, sys, time
out = sys.argv[1]
data = sys.stdin.buffer.read()
name = os.path.join(out, "%d-%d.json" % (time.time_ns(), os.getpid()))
with open(name, "w") as f:
    json.dump({"argv": sys.argv[2:], "stdin": data.decode(), "uid": os.getuid()}, f)
"""

EXITER = """
import sys
sys.stdin.read()
user = sys.argv[1]
codes = {"nouser": 67, "tempfail": 75, "dataerr": 65, "crash": 3, "ok": 0}
print("exiting for", user)
sys.exit(codes.get(user, 0))
"""

HANGER = """
import time
time.sleep(3600)
"""


def script(folder: Path, name: str, body: str) -> str:
    p = folder / name
    p.write_text(f"#!{PYTHON}\n" + textwrap.dedent(body))
    p.chmod(0o755)
    return str(p)


@pytest.fixture
def tmp_path():
    """Not pytest's tmp_path: as root, instance.py moves an instance under
    pytest's base to a root-owned /tmp folder, which the ordinary user these
    tests run the instance as cannot write; and pytest resets its base to
    0700 (see localusers.traversable_tmp)."""
    with traversable_tmp() as path:
        yield path


def _traversable(path: Path) -> None:
    os.chmod(path, 0o755)
    for parent in path.parents:
        if str(parent) in ("/", "/tmp"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, (mode & 0o7777) | 0o011)


@contextlib.contextmanager
def ordinary_instance(tmp_path: Path, main_cf: dict[str, str]):
    if os.geteuid() != 0:
        with Instance(tmp_path / "inst", main_cf=main_cf) as inst:
            yield inst, pwd.getpwuid(os.geteuid())
        return
    with local_users(tmp_path, 1, prefix="pfyp") as (me,):
        root = tmp_path / "inst"
        root.mkdir()
        os.chown(root, me.pw_uid, me.pw_gid)
        with Instance(root, main_cf=main_cf, user=me.pw_name) as inst:
            yield inst, me


def add_services(inst: Instance, text: str) -> None:
    with open(inst.config_dir / "master.cf", "a") as f:
        f.write(textwrap.dedent(text))


def sendmail(inst: Instance, *args: str, body: bytes = b"Subject: t\n\nhi\n.dot\n") -> None:
    p = inst.command("sendmail", *args, input=body)
    assert p.returncode == 0, p.stderr.decode()


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.iterdir())]


def pipe_line(service: str, rcpt: str, dsn: str, status: str, reason: str) -> str:
    return (rf"postfix/pipe\[\d+\]: {QID}: to=<{re.escape(rcpt)}>, relay={service}, "
            rf"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn={re.escape(dsn)}, "
            rf"status={status} \({reason}\)")


def test_pipe_services(tmp_path):
    _traversable(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(mode=0o755)
    out1, out2 = tmp_path / "one", tmp_path / "all"
    for d in (out1, out2):
        d.mkdir()
        d.chmod(0o777)
    rec, exiter, hanger = (script(bin_dir, "rec", RECORDER), script(bin_dir, "exit", EXITER),
                           script(bin_dir, "hang", HANGER))
    (tmp_path / "transport").write_text(
        "one.example  one:\nall.example  all:\nexit.example exit:\nhang.example hang:\n")
    (tmp_path / "transport").chmod(0o644)
    main_cf = {"transport_maps": f"texthash:{tmp_path}/transport",
               "one_destination_recipient_limit": "1", "hang_time_limit": "2s",
               "recipient_delimiter": "+"}
    with ordinary_instance(tmp_path, main_cf) as (inst, me):
        add_services(inst, f"""
            one   unix  -  n  n  -  -  pipe
              flags=DORhu. user={me.pw_name} argv={rec} {out1} ${{sender}} ${{recipient}}
              ${{user}} ${{extension}} ${{nexthop}} ${{original_recipient}} ${{queue_id}}
            all   unix  -  n  n  -  -  pipe
              flags=q user={me.pw_name} null_sender= argv={rec} {out2} -f ${{sender}} -- ${{recipient}}
            exit  unix  -  n  n  -  -  pipe
              user={me.pw_name} argv={exiter} ${{user}}
            hang  unix  -  n  n  -  -  pipe
              user={me.pw_name} argv={hanger}
        """)
        inst.start()
        sender = f"{me.pw_name}@localhost.localdomain"

        # One invocation per recipient (one_destination_recipient_limit = 1).
        sendmail(inst, "-f", sender, "Ann+Box@One.Example", "bob@one.example")
        inst.wait_for_log(pipe_line("one", "Ann+Box@One.Example", "2.0.0", "sent",
                                    "delivered via one service"), timeout=30)
        inst.wait_for_log(pipe_line("one", "bob@one.example", "2.0.0", "sent",
                                    "delivered via one service"), timeout=30)
        got = sorted(records(out1), key=lambda r: r["argv"][1])
        assert len(got) == 2, got
        qid = got[0]["argv"][-1]
        assert got[0]["argv"] == [sender, "ann+box@one.example", "ann", "box", "one.example",
                                  "ann+box@one.example", qid]
        lines = got[0]["stdin"].split("\n")
        assert lines[:3] == [f"Return-Path: <{sender}>", "X-Original-To: Ann+Box@One.Example",
                             "Delivered-To: Ann+Box@One.Example"]
        assert "..dot" in lines
        assert got[0]["uid"] == me.pw_uid

        # All recipients in one invocation (default limit 50), null sender.
        sendmail(inst, "-f", "<>", "x@all.example", "y@all.example", "z@all.example")
        inst.wait_for_log(pipe_line("all", "z@all.example", "2.0.0", "sent",
                                    "delivered via all service"), timeout=30)
        (one_call,) = records(out2)
        assert one_call["argv"] == ["-f", "", "--", "x@all.example", "y@all.example",
                                    "z@all.example"]

        # Each class of exit status.
        sendmail(inst, "nouser@exit.example")
        inst.wait_for_log(pipe_line("exit", "nouser@exit.example", "5.1.1", "bounced",
                                    r"user unknown\. Command output: exiting for nouser"),
                          timeout=30)
        sendmail(inst, "dataerr@exit.example")
        inst.wait_for_log(pipe_line("exit", "dataerr@exit.example", "5.6.0", "bounced",
                                    r"data format error\. Command output: exiting for dataerr"),
                          timeout=30)
        sendmail(inst, "tempfail@exit.example")
        inst.wait_for_log(pipe_line("exit", "tempfail@exit.example", "4.3.0", "deferred",
                                    r"temporary failure\. Command output: exiting for tempfail"),
                          timeout=30)
        sendmail(inst, "crash@exit.example")
        inst.wait_for_log(pipe_line("exit", "crash@exit.example", "5.3.0", "bounced",
                                    rf'Command died with status 3: "{re.escape(exiter)}"\. '
                                    r"Command output: exiting for crash"), timeout=30)

        # A command that hangs: killed at hang_time_limit, mail bounced
        # (Postfix's pipe_command.c).
        sendmail(inst, "h@hang.example")
        inst.wait_for_log(pipe_line("hang", "h@hang.example", "5.3.0", "bounced",
                                    rf'Command time limit exceeded: "{re.escape(hanger)}"'),
                          timeout=30)
        assert not any("hang" in cmd and PYTHON in cmd for _, cmd in _procs_of(me.pw_uid))


def _procs_of(uid: int) -> list[tuple[int, str]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                    out.append((int(entry), cmd.decode(errors="replace")))
            except OSError:
                continue
    return out


def test_root_runs_the_command_as_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: the command runs as user=")
    _traversable(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(mode=0o755)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    rec = script(bin_dir, "rec", RECORDER)
    (tmp_path / "transport").write_text("one.example one:\nroot.example asroot:\n")
    with Instance(tmp_path / "inst", main_cf={
            "transport_maps": f"texthash:{tmp_path}/transport"}) as inst:
        add_services(inst, f"""
            one   unix  -  n  n  -  -  pipe
              user=nobody argv={rec} {out} ${{recipient}}
            asroot unix -  n  n  -  -  pipe
              user=root argv={rec} {out} ${{recipient}}
        """)
        inst.start()
        sendmail(inst, "u@one.example")
        inst.wait_for_log(pipe_line("one", "u@one.example", "2.0.0", "sent",
                                    "delivered via one service"), timeout=30)
        (got,) = records(out)
        assert got["uid"] == pwd.getpwnam("nobody").pw_uid
        # user=root is refused with a fatal error; the mail stays queued.
        sendmail(inst, "u@root.example")
        inst.wait_for_log(r"postfix/pipe\[\d+\]: fatal: user= command-line attribute "
                          r"specifies root privileges", timeout=30)
        # qmgr sees the agent go away and keeps the mail for a later try.
        inst.wait_for_log(r"postfix/qmgr\[\d+\]: warning: \w+: asroot agent: ", timeout=30)
        inst.wait_until(lambda: list((inst.queue_dir / "deferred").rglob("[0-9A-F]*")),
                        timeout=15, what="the message in deferred/")
        assert len(records(out)) == 1
