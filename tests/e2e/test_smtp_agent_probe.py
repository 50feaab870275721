"""The smtp agent against a scripted server on loopback, one process.

- sendmail -bv (a trace-only request): the agent probes with EHLO, MAIL and
  RCPT, ends with RSET/QUIT, never sends DATA, and answers deliverable or
  undeliverable with the server's reply; nothing is marked done.
- the RFC 3464 details of each result, as Postfix's smtp fills them:
  Remote-MTA "dns; host", Diagnostic-Code "smtp; <reply>", Action relayed,
  or DSN_PASSED when NOTIFY went along to a DSN server.
- the body as the server sees it: CRLF, dot-stuffed, a message larger than
  one read chunk, and long lines split as smtp_line_length_limit says.

The agent (pfy.daemons.smtp.agent.Agent) is driven directly with a
DeliveryRequest for a real queue file; qmgr is not involved (it routes
trace-only requests to the agent once "smtp" is in VERIFY_AGENTS).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest

from pfy.config import load_config
from pfy.daemons.smtp.agent import Agent
from pfy.ipc.delivery import (DEL_REQ_FLAG_USR_VRFY, DELIVERABLE, DSN_PASSED, UNDELIVERABLE,
                              ClientInfo, DeliveryRequest, RequestRecipient)
from pfy.queue.directory import Queue
from pfy.queue.queue_file import QueueFileReader
from pfy.smtp.client import DSN_NOTIFY_FAILURE, DSN_NOTIFY_SUCCESS

HOST = "mx.test"


class Server:
    """A scripted ESMTP server: every command line is recorded; the DATA
    bytes up to the final dot are kept raw."""

    def __init__(self, dsn: bool = True):
        self.dsn = dsn
        self.commands: list[str] = []
        self.data = b""

    async def handle(self, reader, writer):
        writer.write(b"220 mx.test ESMTP\r\n")
        while line := await reader.readline():
            cmd = line.decode().rstrip("\r\n")
            self.commands.append(cmd)
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                writer.write(b"250-mx.test\r\n250-PIPELINING\r\n" +
                             (b"250-DSN\r\n" if self.dsn else b"") + b"250 8BITMIME\r\n")
            elif verb == "RCPT" and "bad@" in cmd:
                writer.write(b"550 5.1.1 <bad@remote.test>: Recipient address rejected: "
                             b"User unknown\r\n")
            elif verb == "RCPT":
                writer.write(b"250 2.1.5 Ok\r\n")
            elif verb == "DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                buf = b""
                while not buf.endswith(b"\r\n.\r\n"):
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    buf += chunk
                self.data = buf
                writer.write(b"250 2.0.0 Ok: queued as ABC123\r\n")
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                writer.close()
                return
            else:                           # MAIL, RSET, NOOP
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()


def submit(queue: Queue, rcpts, lines):
    with queue.create("incoming") as w:
        w.time()
        w.sender("a@pfy.test")
        for r in rcpts:
            w.recipient(r, orig_rcpt=r)
        w.begin_content()
        for line in lines:
            w.content_line(line)
        w.end_content()
        qid = w.commit()
    entry = queue.move(queue.entry("incoming", qid), "active")
    with QueueFileReader(entry.path) as r:
        envl = r.read_envelope()
    return entry.path, qid, envl


def run(tmp_path, rcpts, lines=(b"Subject: t", b"", b"hello"), flags=0, notify=0,
        dsn=True, **params):
    (tmp_path / "etc").mkdir(parents=True, exist_ok=True)
    settings = {"myhostname": "pfy.test", "inet_protocols": "ipv4",
                "smtp_connection_cache_on_demand": "no"}
    settings.update(params)
    (tmp_path / "etc" / "main.cf").write_text("".join(f"{k} = {v}\n"
                                                      for k, v in settings.items()))
    cfg = load_config(str(tmp_path / "etc"))
    queue = Queue(str(tmp_path / "q"), fsync=False)
    queue.make_dirs()
    path, qid, envl = submit(queue, rcpts, lines)
    server = Server(dsn=dsn)

    async def main():
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        rs = [RequestRecipient(r.address, r.orig_rcpt, r.offset, dsn_notify=notify)
              for r in envl.recipients]
        req = DeliveryRequest(flags, "active", qid, envl.data_offset, envl.content_size,
                              f"[{HOST}]:{port}", "7bit", 0, envl.sender, "", 0,
                              envl.arrival_time, envl.arrival_time, ClientInfo(), rs)
        agent = Agent(cfg, lmtp=False)
        # [mx.test] resolves to loopback: the Remote-MTA is the host name.
        import pfy.daemons.smtp.routing as routing
        real = routing.resolve

        async def resolve(nexthop, **kw):
            targets = await real(dataclasses.replace(nexthop, host="127.0.0.1"), **kw)
            return [dataclasses.replace(t, hostname=HOST) for t in targets]
        import pfy.daemons.smtp.agent as agent_mod
        agent_mod.resolve, saved = resolve, agent_mod.resolve
        fd = os.open(path, os.O_RDWR)
        try:
            async with srv:
                return await agent.deliver(req, fd)
        finally:
            agent_mod.resolve = saved
            os.close(fd)

    reply = asyncio.run(main())
    with QueueFileReader(path) as r:
        pending = [x.address for x in r.read_envelope().recipients if not x.done]
    return {res.address: res for res in reply.results}, server, pending


def test_probe_answers_with_rcpt_reply_and_sends_no_data(tmp_path):
    res, server, pending = run(tmp_path, ["good@remote.test", "bad@remote.test"],
                               flags=DEL_REQ_FLAG_USR_VRFY)
    verbs = [c.split(" ", 1)[0].upper() for c in server.commands]
    assert verbs[:4] == ["EHLO", "MAIL", "RCPT", "RCPT"], verbs
    assert "DATA" not in verbs and server.data == b""
    assert verbs[4:] in (["RSET", "QUIT"], ["QUIT"], ["RSET"]), verbs
    good, bad = res["good@remote.test"], res["bad@remote.test"]
    assert (good.status, good.action, good.dsn) == ("sent", DELIVERABLE, "2.1.5")
    assert good.reason == "250 2.1.5 Ok"
    assert (bad.status, bad.action, bad.dsn) == ("bounced", UNDELIVERABLE, "5.1.1")
    assert bad.reason.startswith(f"host {HOST}[127.0.0.1] said: 550 5.1.1 <bad@remote.test>")
    assert bad.reason.endswith("(in reply to RCPT TO command)")
    # nothing delivered, nothing marked: qmgr marks after recording the report
    assert not good.marked and sorted(pending) == sorted(res)


def test_results_carry_remote_mta_and_diagnostic_code(tmp_path):
    res, server, pending = run(tmp_path, ["good@remote.test", "bad@remote.test"], dsn=False)
    good, bad = res["good@remote.test"], res["bad@remote.test"]
    assert good.status == "sent" and good.marked and pending == ["bad@remote.test"]
    assert good.action == "relayed"                 # the server announced no DSN
    assert (good.mta_type, good.mta_name) == ("dns", HOST)
    assert (good.diag_type, good.diag_text) == ("smtp", "250 2.0.0 Ok: queued as ABC123")
    assert bad.status == "bounced" and bad.action == ""
    assert (bad.mta_type, bad.mta_name) == ("dns", HOST)
    assert bad.diag_type == "smtp"
    assert bad.diag_text == ("550 5.1.1 <bad@remote.test>: Recipient address rejected: "
                             "User unknown")


def test_notify_success_passed_to_dsn_server(tmp_path):
    res, server, _ = run(tmp_path, ["good@remote.test"],
                         notify=DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE)
    rcpt = [c for c in server.commands if c.startswith("RCPT")][0]
    assert "NOTIFY=SUCCESS,FAILURE" in rcpt
    assert res["good@remote.test"].action == DSN_PASSED     # qmgr sends no success notice
    res, _, _ = run(tmp_path / "2", ["good@remote.test"], notify=DSN_NOTIFY_FAILURE)
    assert res["good@remote.test"].action == "relayed"


@pytest.mark.parametrize("limit", [998, 0])
def test_big_body_is_crlf_dot_stuffed_in_batches(tmp_path, limit):
    lines = [b"Subject: big", b""]
    for i in range(3000):                       # ~150 KB: several read chunks
        lines.append((b"." if i % 7 == 0 else b"") + b"line %d " % i + b"x" * (i % 80))
    lines.append(b"y" * 2500)                   # one record over the line limit
    lines.append(b".")
    res, server, _ = run(tmp_path, ["good@remote.test"], lines=lines,
                         smtp_line_length_limit=str(limit))
    assert res["good@remote.test"].status == "sent"
    want = []
    for line in lines:
        if line.startswith(b"."):
            line = b"." + line
        if limit and len(line) > limit:
            # smtp_line_length_limit: CRLF SPACE after each limit-long piece
            line = b"\r\n ".join([line[:limit]] + [line[i:i + limit - 1]
                                                   for i in range(limit, len(line), limit - 1)])
        want.append(line)
    assert server.data == b"\r\n".join(want) + b"\r\n.\r\n"
