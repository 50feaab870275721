"""A 50 MB message passes through smtpd with flat memory (issue 5 target:
no process's RSS grows by more than 20 MB)."""

from __future__ import annotations

import socket
import threading
import time

from instance import Instance

SIZE = 50 * 1024 * 1024


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _smtpd_pids(inst) -> list[int]:
    return [pid for pid, cmd in inst.children() if "smtpd" in cmd]


def test_50mb_message_flat_memory(tmp_path):
    with Instance(tmp_path, main_cf={"myhostname": "mx.example", "alias_maps": "",
                                     "mydestination": "mx.example, localhost",
                                     "message_size_limit": str(SIZE * 2)}) as inst:
        inst.start()
        s = socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=60)
        f = s.makefile("rb")
        f.readline()
        pids = _smtpd_pids(inst)
        assert pids
        base = max(_rss_kb(p) for p in pids)
        for cmd in (b"EHLO c", b"MAIL FROM:<a@x.example>", b"RCPT TO:<root@mx.example>", b"DATA"):
            s.sendall(cmd + b"\r\n")
            while True:
                line = f.readline()
                if line[3:4] == b" ":
                    break
        assert line.startswith(b"354")
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], max(_rss_kb(p) for p in _smtpd_pids(inst)))
                except (OSError, ValueError):
                    pass
                time.sleep(0.05)
        t = threading.Thread(target=sample)
        t.start()
        line = b"x" * 998 + b"\r\n"
        chunk = line * 1024
        sent = 0
        s.sendall(b"Subject: big\r\n\r\n")
        while sent < SIZE:
            s.sendall(chunk)
            sent += len(chunk)
        s.sendall(b".\r\n")
        reply = f.readline()
        done.set()
        t.join()
        s.sendall(b"QUIT\r\n")
        s.close()
        assert reply.startswith(b"250 2.0.0 Ok: queued as"), reply
        growth_mb = (peak[0] - base) / 1024
        assert growth_mb < 20, f"smtpd RSS grew {growth_mb:.1f} MB"
