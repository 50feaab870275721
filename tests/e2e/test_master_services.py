"""master end to end: services from master.cf, on-demand processes,
wakeups, crash throttling, reload, stop, the lock; driven by `postfix`."""

import os
import socket
import textwrap
import time

import pytest

from instance import Instance, free_port

ECHO = """
    from pfy.server import single
    from pfy.log import logger
    def handler(ctx, sock):
        line = sock.makefile("rb").readline()
        sock.sendall(b"%s %d %s" % (ctx.service.encode(), os.getpid(), line))
    import os
    single.serve(handler)
"""
CRASH = """
    raise SystemExit(3)
"""
WAKE = """
    from pfy.server import trigger
    from pfy.log import logger
    def handler(ctx, data):
        logger.info(f"woken {data.decode()} service={ctx.service}")
    trigger.serve(handler, solitary=True)
"""


def write_daemons(root):
    for name, body in (("echo", ECHO), ("crash", CRASH), ("wake", WAKE)):
        p = root / "bin" / name
        p.parent.mkdir(exist_ok=True)
        p.write_text("#!/usr/bin/env python3\n" + textwrap.dedent(body))
        p.chmod(0o755)
    os.chmod(root / "bin", 0o755)
    return root / "bin"


def talk(port, data=b"hi\n", host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


@pytest.fixture
def inst(tmp_path):
    bin_dir = write_daemons(tmp_path)
    port = free_port()
    master_cf = textwrap.dedent(f"""\
        # service type private unpriv chroot wakeup maxproc command
        127.0.0.1:{port} inet n - n - 2 {bin_dir}/echo
        wk        fifo n - n 1 1 {bin_dir}/wake
        bad       unix - - n - 1 {bin_dir}/crash
    """)
    with Instance(tmp_path / "inst", master_cf=master_cf,
                  main_cf={"service_throttle_time": "2s"}) as inst:
        inst.echo_port = port
        inst.bin = bin_dir
        yield inst


def test_services_start_on_demand_and_ps_shows_postfix_argv(inst):
    inst.start()
    assert inst.postfix("status").stderr.startswith(
        "postfix/postfix-script: the Postfix mail system is running: PID: ")
    inst.wait_for_log(r"postfix/master\[\d+\]: daemon started -- version \S+, "
                      rf"configuration {inst.config_dir}$")
    reply = talk(inst.echo_port)
    name, pid, line = reply.split(b" ", 2)
    assert name == b"127.0.0.1:%d" % inst.echo_port and line == b"hi\n"
    cmdlines = dict(inst.children())
    assert cmdlines[int(pid)] == f"echo -n 127.0.0.1:{inst.echo_port} -t inet -u"


def test_maxproc_limits_concurrent_processes(inst):
    inst.start()
    # two clients hold connections open: two processes (maxproc 2), no third
    held = [socket.create_connection(("127.0.0.1", inst.echo_port)) for _ in range(3)]
    try:
        inst.wait_until(lambda: sum("echo" in c for _, c in inst.children()) == 2,
                        what="two echo processes")
        time.sleep(0.5)
        assert sum("echo" in c for _, c in inst.children()) == 2
    finally:
        for s in held:
            s.sendall(b"x\n")
        for s in held:
            s.settimeout(10)
            assert s.recv(100).endswith(b"x\n")
            s.close()


def test_wakeup_timer_triggers_fifo_service(inst):
    inst.start()
    inst.wait_for_log(r"postfix/wake\[\d+\]: woken W service=wk", count=2, timeout=10)


def test_crash_before_serving_is_logged_and_throttled(inst):
    inst.start()
    path = inst.queue_dir / "private" / "bad"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        lines = inst.wait_for_log(r"warning: process .*/crash pid \d+ exit status 3")
        inst.wait_for_log(rf"warning: {inst.bin}/crash: bad command startup -- throttling")
    # throttled for 2 s: no new process at once, then one after the timeout
    n = len(inst.wait_for_log(r"exit status 3"))
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        time.sleep(1)
        assert len(inst.wait_for_log(r"exit status 3")) == n
        inst.wait_for_log(r"exit status 3", count=n + 1, timeout=10)
    assert lines


def test_master_survives_a_killed_child(inst):
    inst.start()
    pid1 = int(talk(inst.echo_port).split()[1])
    os.kill(pid1, 9)
    inst.wait_for_log(rf"warning: process .*/echo pid {pid1} killed by signal 9")
    pid2 = int(talk(inst.echo_port).split()[1])
    assert pid2 != pid1


def test_reload_adds_and_removes_services_keeping_connections(inst):
    inst.start()
    held = socket.create_connection(("127.0.0.1", inst.echo_port), timeout=10)
    inst.wait_until(lambda: any("echo" in c for _, c in inst.children()), what="echo process")
    new_port = free_port()
    (inst.config_dir / "master.cf").write_text(textwrap.dedent(f"""\
        127.0.0.1:{inst.echo_port} inet n - n - 2 {inst.bin}/echo
        127.0.0.1:{new_port} inet n - n - 2 {inst.bin}/echo
    """))
    inst.reload()
    inst.wait_for_log(r"postfix/master\[\d+\]: reload -- version \S+, configuration ")
    assert talk(new_port).startswith(b"127.0.0.1:%d " % new_port)
    # the established connection of the old generation is still served
    held.sendall(b"old\n")
    assert held.recv(100).endswith(b"old\n")
    held.close()
    # the removed fifo service's endpoint is no longer served by a process
    inst.wait_until(lambda: not any(c.startswith("wake") for _, c in inst.children()),
                    what="wk service gone")
    assert talk(inst.echo_port).endswith(b"hi\n")


def test_stop_terminates_children_and_frees_ports(inst):
    inst.start()
    talk(inst.echo_port)
    children = [p for p, _ in inst.children()]
    assert children
    p = inst.postfix("stop")
    assert "postfix/postfix-script: stopping the Postfix mail system" in p.stderr
    inst.wait_for_log(r"postfix/master\[\d+\]: terminating on signal 15")
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    r = inst.postfix("status", check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == "postfix/postfix-script: the Postfix mail system is not running"
    inst.start()          # the ports are free again
    assert talk(inst.echo_port).endswith(b"hi\n")


def test_second_master_is_refused(inst):
    inst.start()
    r = inst.postfix("start", check=False)
    assert r.returncode == 1
    assert "postfix/postfix-script: fatal: the Postfix mail system is already running" in r.stderr
    # master itself, bypassing postfix: the lock refuses it
    import subprocess
    import sys
    from pfy.server.paths import default_daemon_directory
    m = subprocess.run([sys.executable, os.path.join(default_daemon_directory(), "master"),
                        "-c", str(inst.config_dir), "-w"], capture_output=True, text=True,
                       timeout=30)
    assert m.returncode == 1
    assert "unable to set exclusive lock" in m.stderr


def test_bind_failure_is_reported_by_start(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    bin_dir = write_daemons(tmp_path)
    with Instance(tmp_path / "inst", master_cf=f"127.0.0.1:{port} inet n - n - 1 {bin_dir}/echo\n") as inst:
        r = inst.postfix("start", check=False)
        assert r.returncode == 1
        assert f"bind 127.0.0.1 port {port}: Address already in use" in r.stderr
    busy.close()
