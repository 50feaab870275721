"""What the delivery agent tests (local, virtual, pipe) set up alike: a
main.cf in a temporary folder, a queue with a message in active/, the
DeliveryRequest qmgr would send for it, and qmgr's end of the socket.

    cfg = make_cfg(tmp_path, home_mailbox="Maildir/")
    queue = make_queue(tmp_path)
    qid, envl = enqueue(queue, ["alice@host"])
    reply = over_socketpair(agent, request_for(qid, envl))
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Callable, Iterable

from pfy.config import load_config
from pfy.ipc.channel import AttrConnection
from pfy.ipc.delivery import (PROTOCOL, ClientInfo, DeliveryReply, DeliveryRequest,
                              RequestRecipient, read_request, send_reply)
from pfy.queue.directory import Queue
from pfy.queue.queue_file import Envelope, QueueFileReader
from pfy.queue.record import REC_FROM

__all__ = ["make_cfg", "make_queue", "make_traversable", "enqueue", "request_for",
           "over_socketpair", "corrupt_content"]


def make_cfg(tmp_path: Path, **params):
    """tmp_path/etc/main.cf with params, loaded."""
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
    return load_config(str(etc))


def make_queue(tmp_path: Path) -> Queue:
    """An empty queue in tmp_path/q."""
    queue = Queue(str(tmp_path / "q"), fsync=False)
    queue.make_dirs()
    return queue


def make_traversable(path: Path) -> None:
    """Let another uid (a mapped virtual uid, pipe's user=) reach path:
    pytest's /tmp/pytest-of-root is 0700.  Adds only o+x on the parents."""
    os.chmod(path, 0o755)
    for parent in path.parents:
        if str(parent) in ("/", "/tmp"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, (mode & 0o7777) | 0o011)


def enqueue(queue: Queue, rcpts: Iterable[str], *, sender: str = "bob@remote.example",
            orig_rcpt: Callable[[str], str] | None = None,
            headers: Iterable[bytes] = (b"Subject: t",),
            body: Iterable[bytes] = (b"From the start", b"hello")) -> tuple[str, Envelope]:
    """One message in active/, as qmgr hands it over: (queue_id, envelope).
    orig_rcpt(rcpt) gives each recipient's original address (default: itself)."""
    with queue.create("incoming") as w:
        w.time()
        w.sender(sender)
        for r in rcpts:
            w.recipient(r, orig_rcpt=r if orig_rcpt is None else orig_rcpt(r))
        w.begin_content()
        for h in headers:
            w.content_line(h)
        w.content_line(b"")
        for line in body:
            w.content_line(line)
        w.end_content()
        qid = w.commit()
    entry = queue.move(queue.entry("incoming", qid), "active")
    with QueueFileReader(entry.path) as r:
        envl = r.read_envelope()
    return qid, envl


def request_for(qid: str, envl: Envelope, rcpts=None, *, nexthop: str = "host",
                client: ClientInfo = ClientInfo()) -> DeliveryRequest:
    """qmgr's request for the queue file's recipients (or those in rcpts)."""
    rs = [RequestRecipient(r.address, r.orig_rcpt, r.offset) for r in envl.recipients
          if rcpts is None or r.address in rcpts]
    return DeliveryRequest(0, "active", qid, envl.data_offset, envl.content_size, nexthop,
                           "", 0, envl.sender, "", 0, envl.arrival_time, envl.arrival_time,
                           client, rs)


def over_socketpair(agent, req: DeliveryRequest) -> DeliveryReply:
    """qmgr's side on one end, the agent's read_request/send_reply on the other."""
    a, b = socket.socketpair()

    def serve():
        with b:
            send_reply(b, agent.handle(read_request(b)))
    t = threading.Thread(target=serve)
    t.start()
    conn = AttrConnection(a)
    frame = conn.receive_frame()
    assert frame.body == PROTOCOL.encode()
    reply = conn.request(req, DeliveryReply)
    t.join()
    a.close()
    return reply


def corrupt_content(queue: Queue, req: DeliveryRequest) -> None:
    """Make the first content record of req's queue file one that does not
    belong in content, so reading the message raises CorruptQueueFile."""
    fd = os.open(queue.path(req.queue_name, req.queue_id), os.O_WRONLY)
    try:
        os.pwrite(fd, bytes([REC_FROM]), req.data_offset)
    finally:
        os.close(fd)
