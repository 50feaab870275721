"""Address verification end to end: smtpd -> verify(8) -> probe through
cleanup -> qmgr -> smtp (MAIL/RCPT, no DATA) -> verify update -> smtpd.

The client comes from 127.0.0.2, outside mynetworks = 127.0.0.1/32, to a
relay_domains domain routed (transport_maps) to a scripted SMTP server on
loopback that accepts good@ and refuses bad@ with 550 at RCPT.  The
replies are Postfix's (smtpd_check.c reject_unverified_address()):

    450 4.1.1 <a>: Recipient address rejected: unverified address: Address verification in progress
    550 5.1.1 <a>: Recipient address rejected: undeliverable address: host ... said: 550 ...
    450 4.1.7 <a>: Sender address rejected: unverified address: ...
    450 4.1.1 <a>: Recipient address rejected: address verification problem   (verify down)

A probe is never delivered, deferred or bounced: the server never sees
DATA, and no notice is ever queued.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import threading

from instance import Instance, _shipped_master_cf

OUTSIDE = ("127.0.0.2", 0)


class Remote:
    """A scripted SMTP server in a thread: records every command line."""

    def __init__(self):
        self.commands: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader, writer):
        writer.write(b"220 remote.example ESMTP\r\n")
        try:
            while line := await reader.readline():
                cmd = line.decode().rstrip("\r\n")
                self.commands.append(cmd)
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    writer.write(b"250-remote.example\r\n250 PIPELINING\r\n")
                elif verb == "RCPT" and "<bad@" in cmd:
                    writer.write(b"550 5.1.1 <bad@remote.example>: Recipient address "
                                 b"rejected: User unknown\r\n")
                elif verb == "DATA":
                    writer.write(b"554 5.5.1 no DATA for probes\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        finally:
            writer.close()

    def _run(self):
        asyncio.set_event_loop(self._loop)

        async def start():
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            return server
        self._server = self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _main_cf(port: int, **extra) -> dict:
    cf = {
        "myhostname": "mx.example",
        "mydestination": "mx.example, localhost",
        "mynetworks": "127.0.0.1/32",
        "relay_domains": "remote.example",
        "transport_maps": f"inline:{{remote.example=smtp:[127.0.0.1]:{port}}}",
        "smtpd_recipient_restrictions": "reject_unverified_recipient, reject_unauth_destination",
        # One query per RCPT: the first answer is "in progress" at once.
        "address_verify_poll_count": "1",
        "unverified_recipient_reject_code": "550",
        "minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s",
    }
    cf.update(extra)
    return cf


def _rcpt(inst: Instance, rcpt: str, sender: str = "someone@client.example"):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, source_address=OUTSIDE, timeout=30) as s:
        s.ehlo("client.example")
        code, msg = s.mail(sender)
        assert code == 250, (code, msg)
        return s.rcpt(rcpt)


def _reply(r) -> str:
    return f"{r[0]} {r[1].decode()}"


def test_unverified_recipient_probe_then_verdicts(tmp_path):
    with Remote() as remote, Instance(tmp_path, main_cf=_main_cf(remote.port)) as inst:
        inst.start()
        # Unknown address: a probe goes out, the client must come back.
        got = _reply(_rcpt(inst, "good@remote.example"))
        assert got == ("450 4.1.1 <good@remote.example>: Recipient address rejected: "
                       "unverified address: Address verification in progress"), got
        inst.wait_for_log(r"to=<good@remote.example>.*status=deliverable", timeout=20)
        inst.wait_for_log(r": removed", timeout=20)
        got = _rcpt(inst, "good@remote.example")
        assert got[0] == 250, got

        got = _reply(_rcpt(inst, "bad@remote.example"))
        assert got.startswith("450 4.1.1 <bad@remote.example>: Recipient address rejected: "
                              "unverified address: Address verification in progress"), got
        inst.wait_for_log(r"to=<bad@remote.example>.*status=undeliverable", timeout=20)
        inst.wait_for_log(r": removed", timeout=20, count=2)
        got = _reply(_rcpt(inst, "bad@remote.example"))
        assert got == ("550 5.1.1 <bad@remote.example>: Recipient address rejected: "
                       "undeliverable address: host 127.0.0.1[127.0.0.1] said: 550 5.1.1 "
                       "<bad@remote.example>: Recipient address rejected: User unknown "
                       "(in reply to RCPT TO command)"), got

        # The probes: MAIL from the double-bounce sender and RCPT, never DATA.
        assert "RCPT TO:<good@remote.example>" in remote.commands, remote.commands
        assert "RCPT TO:<bad@remote.example>" in remote.commands, remote.commands
        assert not any(c.upper().startswith("DATA") for c in remote.commands), remote.commands
        mails = [c for c in remote.commands if c.upper().startswith("MAIL FROM:")]
        assert mails and all("<double-bounce@mx.example>" in m for m in mails), mails
        # Nothing was delivered, deferred or bounced because of a probe.
        log = inst.log()
        assert "status=sent" not in log and "status=bounced" not in log, log
        assert "status=deferred" not in log and "non-delivery notification" not in log, log
        assert not re.search(r"postfix/(bounce|local|error)\[", log), log
        for q in ("incoming", "active", "deferred", "bounce", "defer", "trace"):
            assert not [p for p in (inst.queue_dir / q).rglob("*") if p.is_file()], q


def test_unverified_sender(tmp_path):
    cf = _main_cf(0, smtpd_recipient_restrictions="reject_unauth_destination",
                  smtpd_sender_restrictions="reject_unverified_sender")
    with Remote() as remote, Instance(tmp_path, main_cf=dict(
            cf, transport_maps=f"inline:{{remote.example=smtp:[127.0.0.1]:{remote.port}}}")) as inst:
        inst.start()
        got = _reply(_rcpt(inst, "x@remote.example", sender="good@remote.example"))
        assert got == ("450 4.1.7 <good@remote.example>: Sender address rejected: "
                       "unverified address: Address verification in progress"), got
        inst.wait_for_log(r"to=<good@remote.example>.*status=deliverable", timeout=20)
        inst.wait_for_log(r": removed", timeout=20)
        got = _rcpt(inst, "x@remote.example", sender="good@remote.example")
        assert got[0] == 250, got
        # The null sender is never verified (bounces must get through).
        got = _rcpt(inst, "x@remote.example", sender="")
        assert got[0] == 250, got


def test_verify_service_down_is_tempfail_action(tmp_path):
    master = "\n".join(line for line in _shipped_master_cf().splitlines()
                       if not line.startswith("verify "))
    with Instance(tmp_path, main_cf=_main_cf(9)) as inst:
        inst.write_master_cf(inst._ported(master))
        inst.start()
        got = _reply(_rcpt(inst, "good@remote.example"))
        # defer_if_permit (reject_tempfail_action): the list ends in permit.
        assert got == ("450 4.1.1 <good@remote.example>: Recipient address rejected: "
                       "address verification problem"), got
        inst.wait_for_log(r"warning: verify service failure")
