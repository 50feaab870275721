"""virtual(8) and sendmail -bv: a trace-only request is answered from the
virtual_mailbox_maps / uid / gid lookups; no mailbox is written and no
recipient is marked done."""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from test_virtual_agent import submit, world  # noqa: E402,F401

from pfy.daemons.virtual import VirtualAgent  # noqa: E402
from pfy.ipc.delivery import DEL_REQ_FLAG_USR_VRFY, DELIVERABLE, UNDELIVERABLE  # noqa: E402
from pfy.queue.queue_file import QueueFileReader  # noqa: E402


def test_probe_answers_from_the_maps_and_writes_nothing(world):
    queue, base, cfg, tmp = world
    req = submit(queue, ["alice@v.example", "bob@v.example", "who@v.example",
                         "lowuid@v.example", "evil1@v.example"])
    req = dataclasses.replace(req, flags=DEL_REQ_FLAG_USR_VRFY)
    reply = VirtualAgent(cfg, str(tmp / "q")).handle(req)
    res = {r.address: r for r in reply.results}
    assert (res["alice@v.example"].status, res["alice@v.example"].action,
            res["alice@v.example"].reason) == ("sent", DELIVERABLE, "delivers to maildir")
    assert res["bob@v.example"].reason == "delivers to mailbox"
    assert (res["who@v.example"].dsn, res["who@v.example"].action) == ("5.1.1", UNDELIVERABLE)
    assert res["lowuid@v.example"].action == UNDELIVERABLE        # virtual_minimum_uid
    assert res["evil1@v.example"].action == UNDELIVERABLE         # path refused
    assert not any(r.marked for r in res.values())
    assert list(base.iterdir()) == []
    with QueueFileReader(queue.path("active", req.queue_id)) as r:
        assert not any(x.done for x in r.read_envelope().recipients)
