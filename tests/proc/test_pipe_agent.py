"""pipe(8) running real commands: argv and stdin, each sysexits class, a
hanging command, size and loop checks, the user= identity, and the daemon
taking its master.cf attributes from master's argv."""

from __future__ import annotations

import os
import pwd
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import delivery_setup  # noqa: E402
from delivery_setup import (corrupt_content, enqueue, make_queue,  # noqa: E402
                            make_traversable, request_for)

from pfy.daemons.pipe import PipeAgent, parse_attrs  # noqa: E402
from pfy.ipc.channel import AttrConnection  # noqa: E402
from pfy.ipc.delivery import PROTOCOL, ClientInfo, DeliveryReply, DeliveryRequest  # noqa: E402
from pfy.queue.queue_file import QueueFileReader  # noqa: E402
from pfy.server.testing import start_daemon, unix_listener  # noqa: E402


def make_cfg(tmp_path: Path, **params):
    params.setdefault("queue_directory", str(tmp_path / "q"))
    return delivery_setup.make_cfg(tmp_path, **params)


# The commands run as user= (nobody when root): the system's python3, not
# the test's interpreter, which may live in root's home.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def script(tmp_path: Path, name: str, body: str) -> str:
    """An executable Python script in tmp_path."""
    p = tmp_path / name
    p.write_text(f"#!{PYTHON}\n" + textwrap.dedent(body))
    p.chmod(0o755)
    make_traversable(tmp_path)             # user= must reach the scripts
    return str(p)


@pytest.fixture
def queue(tmp_path):
    return make_queue(tmp_path)


CLIENT = ClientInfo(name="mx.example", addr="192.0.2.7", port="4711", helo="helo.example",
                    proto="ESMTP", sasl_method="PLAIN", sasl_username="sam")


def submit(queue, rcpts, sender="s@remote.example", headers=(b"Subject: t",),
           body=(b"hello", b".dot", b"From x")):
    qid, envl = enqueue(queue, rcpts, sender=sender, orig_rcpt=lambda r: "orig-" + r,
                        headers=headers, body=body)
    return request_for(qid, envl, nexthop="Next.Example", client=CLIENT)


def me() -> str:
    """A user= that parse_attrs accepts: ourselves, or nobody when root."""
    if os.geteuid() == 0:
        return "nobody"
    return pwd.getpwuid(os.geteuid()).pw_name


def agent(tmp_path, attrs, service="filter", **params):
    cfg = make_cfg(tmp_path, **params)
    return PipeAgent(cfg, parse_attrs(attrs, "postfix"), service, str(tmp_path / "q"))


RECORDER = """
import json, os, sys
out = os.environ.get("OUT") or sys.argv[1]
data = sys.stdin.buffer.read()
with open(out, "w") as f:
    json.dump({"argv": sys.argv[2:], "stdin": data.decode(), "uid": os.getuid(),
               "gid": os.getgid(), "cwd": os.getcwd(), "env": dict(os.environ)}, f)
"""


def test_argv_macros_stdin_and_flags(tmp_path, queue):
    import json
    out = tmp_path / "out"
    out.touch()
    out.chmod(0o666)
    cmd = script(tmp_path, "rec", RECORDER)
    a = agent(tmp_path, ["flags=FRODh.>", f"user={me()}", "directory=/", "argv=" + cmd,
                         str(out), "${sender}", "${recipient}", "${user}", "${extension}",
                         "${domain}", "${nexthop}", "${mailbox}", "${original_recipient}",
                         "${client_address}", "${client_hostname}", "${client_helo}",
                         "${client_protocol}", "${client_port}", "${queue_id}",
                         "${sasl_method}", "${sasl_username}", "${size}", "$$x"],
              recipient_delimiter="+")
    req = submit(queue, ["Joe+Ext@V.Example"])
    reply = a.handle(req)
    (r,) = reply.results
    assert (r.status, r.reason) == ("sent", "delivered via filter service"), r
    got = json.loads(out.read_text())
    assert got["argv"] == ["s@remote.example", "Joe+Ext@v.example", "Joe", "Ext", "v.example",
                           "next.example", "Joe+Ext", "orig-Joe+Ext@v.example", "192.0.2.7",
                           "mx.example", "helo.example", "ESMTP", "4711", req.queue_id, "PLAIN",
                           "sam", str(req.data_size), "$x"]
    lines = got["stdin"].split("\n")
    assert lines[0].startswith("From s@remote.example  ")
    assert lines[1:4] == ["Return-Path: <s@remote.example>",
                          "X-Original-To: orig-Joe+Ext@V.Example", "Delivered-To: Joe+Ext@V.Example"]
    assert lines[4:] == ["Subject: t", "", "hello", "..dot", ">From x", ""]
    assert got["cwd"] == "/"
    assert set(got["env"]) <= {"TZ", "MAIL_CONFIG", "LANG", "LC_CTYPE"}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        assert (got["uid"], got["gid"]) == (nobody.pw_uid, nobody.pw_gid)
    with QueueFileReader(str(tmp_path / "q" / "active" / req.queue_id)) as rd:
        assert rd.read_envelope().pending == []


def test_all_recipients_in_one_invocation(tmp_path, queue):
    import json
    out = tmp_path / "out"
    out.touch()
    out.chmod(0o666)
    cmd = script(tmp_path, "rec", RECORDER)
    a = agent(tmp_path, [f"user={me()}", "null_sender=", "argv=" + cmd, str(out),
                         "-f", "${sender}", "--", "${recipient}"])
    reply = a.handle(submit(queue, ["a@x", "b@x", "c@x"], sender=""))
    assert [r.status for r in reply.results] == ["sent"] * 3
    assert json.loads(out.read_text())["argv"] == ["-f", "", "--", "a@x", "b@x", "c@x"]


@pytest.mark.parametrize("code, status, dsn, reason", [
    (0, "sent", "2.0.0", "delivered via filter service"),
    (75, "deferred", "4.3.0", "temporary failure. Command output: said 75"),
    (71, "deferred", "4.3.0", "system resource problem. Command output: said 71"),
    (67, "bounced", "5.1.1", "user unknown. Command output: said 67"),
    (65, "bounced", "5.6.0", "data format error. Command output: said 65"),
    (77, "bounced", "5.7.0", "permission denied. Command output: said 77"),
    (1, "bounced", "5.3.0", 'Command died with status 1: "{cmd}". Command output: said 1'),
])
def test_each_sysexits_class(tmp_path, queue, code, status, dsn, reason):
    cmd = script(tmp_path, "exit", f"""
        import sys
        sys.stdin.read()
        print("said", {code})
        sys.exit({code})
    """)
    a = agent(tmp_path, [f"user={me()}", "argv=" + cmd])
    (r,) = a.handle(submit(queue, ["u@x"])).results
    want = (status, dsn, reason.format(cmd=cmd))
    assert (r.status, r.dsn, r.reason) == want, f"got {r} want {want}"


def test_enhanced_status_in_output_wins(tmp_path, queue):
    cmd = script(tmp_path, "full", """
        print("4.2.2 Mailbox over quota")
        raise SystemExit(1)
    """)
    (r,) = agent(tmp_path, [f"user={me()}", "argv=" + cmd]).handle(submit(queue, ["u@x"])).results
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.2.2", "Mailbox over quota")


def test_soft_bounce(tmp_path, queue):
    cmd = script(tmp_path, "nouser", "raise SystemExit(67)\n")
    a = agent(tmp_path, [f"user={me()}", "argv=" + cmd], soft_bounce="yes")
    (r,) = a.handle(submit(queue, ["u@x"])).results
    assert (r.status, r.dsn) == ("deferred", "4.1.1")


def test_hanging_command_is_killed_with_its_children(tmp_path, queue):
    pidfile = tmp_path / "grandchild"
    cmd = script(tmp_path, "hang", f"""
        import os, subprocess, sys, time
        p = subprocess.Popen(["/bin/sleep", "600"])
        open({str(pidfile)!r}, "w").write(str(p.pid))
        time.sleep(600)
    """)
    os.chmod(tmp_path, 0o777)
    a = agent(tmp_path, [f"user={me()}", "argv=" + cmd], filter_time_limit="2s")
    t0 = time.monotonic()
    (r,) = a.handle(submit(queue, ["u@x"])).results
    assert time.monotonic() - t0 < 15
    assert (r.status, r.dsn) == ("bounced", "5.3.0")        # pipe_command.c
    assert r.reason == f'Command time limit exceeded: "{cmd}"'
    gpid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(gpid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the command's child survived the time limit")


def test_command_that_does_not_read_stdin(tmp_path, queue):
    cmd = script(tmp_path, "early", "raise SystemExit(0)\n")
    a = agent(tmp_path, [f"user={me()}", "argv=" + cmd])
    (r,) = a.handle(submit(queue, ["u@x"], body=[b"x" * 1000] * 2000)).results
    assert r.status == "sent"


def test_missing_command_defers(tmp_path, queue):
    make_traversable(tmp_path)
    a = agent(tmp_path, [f"user={me()}", f"argv={tmp_path}/no-such-command"])
    (r,) = a.handle(submit(queue, ["u@x"])).results
    assert r.status == "deferred" and "No such file" in r.reason


def test_size_limit_bounces(tmp_path, queue):
    a = agent(tmp_path, [f"user={me()}", "size=10", "argv=/bin/cat"])
    (r,) = a.handle(submit(queue, ["u@x"])).results
    assert (r.status, r.dsn, r.reason) == ("bounced", "5.2.3", "message too large")


def test_d_flag_loop_and_multi_recipient_checks(tmp_path, queue):
    a = agent(tmp_path, [f"user={me()}", "flags=D", "argv=/bin/cat"])
    (r,) = a.handle(submit(queue, ["u@x"], headers=[b"Delivered-To: U@x"])).results
    assert (r.status, r.dsn) == ("bounced", "5.4.6")
    rs = a.handle(submit(queue, ["u@x", "v@x"])).results
    assert {(r.status, r.dsn) for r in rs} == {("deferred", "4.3.5")}


def test_queue_file_trouble_defers(tmp_path, queue, capsys):
    # Content that cannot be read (here by the D flag's loop check) defers
    # every recipient; so does a queue file that cannot be opened.
    a = agent(tmp_path, [f"user={me()}", "flags=D", "argv=/bin/cat"])
    req = submit(queue, ["u@x"])
    corrupt_content(queue, req)
    (r,) = a.handle(req).results
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.0", "queue file format error")
    assert f"{req.queue_id}: " in capsys.readouterr().err
    os.unlink(queue.path("active", req.queue_id))
    (r,) = a.handle(req).results
    assert (r.status, r.dsn, r.reason) == (
        "deferred", "4.3.0", "cannot open queue file: No such file or directory")


def test_unknown_macro_defers(tmp_path, queue):
    a = agent(tmp_path, [f"user={me()}", "argv=/bin/echo", "${nosuchthing}"])
    (r,) = a.handle(submit(queue, ["u@x"])).results
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.5", "mail system configuration error")


# -- the daemon under a fake master ------------------------------------------------

def _request_over(path: str, req: DeliveryRequest) -> DeliveryReply | None:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(path)
    conn = AttrConnection(s)
    try:
        assert conn.receive_frame().body == PROTOCOL.encode()
        return conn.request(req, DeliveryReply)
    except (EOFError, OSError, Exception):
        return None
    finally:
        s.close()


def test_daemon_gets_master_cf_attributes(tmp_path, queue):
    out = tmp_path / "out"
    out.touch()
    out.chmod(0o666)
    cmd = script(tmp_path, "rec", RECORDER)
    make_cfg(tmp_path)
    lsock, path = unix_listener(tmp_path / "q" / "private" / "filter")
    args = ["-n", "filter", "-t", "unix", "flags=R", f"user={me()}", "argv=" + cmd,
            str(out), "-f", "${sender}", "--", "${recipient}"]
    with start_daemon("pipe", config_dir=tmp_path / "etc", listen=[lsock], args=args) as d:
        reply = _request_over(path, submit(queue, ["u@x"]))
        d.master_exit()
        d.wait(10)
    assert reply is not None and [r.status for r in reply.results] == ["sent"], reply
    import json
    assert json.loads(out.read_text())["argv"] == ["-f", "s@remote.example", "--", "u@x"]


def test_daemon_refuses_root_user(tmp_path, queue):
    make_cfg(tmp_path)
    lsock, path = unix_listener(tmp_path / "q" / "private" / "bad")
    args = ["-n", "bad", "-t", "unix", "user=root", "argv=/bin/cat"]
    with start_daemon("pipe", config_dir=tmp_path / "etc", listen=[lsock], args=args) as d:
        reply = _request_over(path, submit(queue, ["u@x"]))
        assert d.wait(10) == 1
    assert reply is None        # qmgr sees the connection drop and defers
