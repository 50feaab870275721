"""pipe(8) and sendmail -bv: a trace-only request runs nothing; the
answer is deliverable when the command exists and is executable."""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from test_pipe_agent import agent, me, queue, script, submit  # noqa: E402,F401

from pfy.ipc.delivery import DEL_REQ_FLAG_USR_VRFY, DELIVERABLE, UNDELIVERABLE  # noqa: E402
from pfy.queue.queue_file import QueueFileReader  # noqa: E402


def probe(a, queue, rcpts):
    req = dataclasses.replace(submit(queue, rcpts), flags=DEL_REQ_FLAG_USR_VRFY)
    results = a.handle(req).results
    with QueueFileReader(queue.path("active", req.queue_id)) as r:
        assert not any(x.done for x in r.read_envelope().recipients)
    return results


def test_existing_command_is_deliverable_and_not_run(tmp_path, queue):
    ran = tmp_path / "ran"
    cmd = script(tmp_path, "filter", f"open({str(ran)!r}, 'w').write('x')\n")
    a = agent(tmp_path, [f"user={me()}", f"argv={cmd}", "${recipient}"])
    results = probe(a, queue, ["u@x", "v@x"])
    assert [(r.status, r.action, r.reason, r.marked) for r in results] == [
        ("sent", DELIVERABLE, f"delivers to command: {cmd}", False)] * 2
    assert not ran.exists()


def test_missing_or_unexecutable_command_is_undeliverable(tmp_path, queue):
    a = agent(tmp_path, [f"user={me()}", f"argv={tmp_path}/no-such-command"])
    (r,) = probe(a, queue, ["u@x"])
    assert (r.status, r.action) == ("deferred", UNDELIVERABLE)
    assert "No such file or directory" in r.reason
    plain = tmp_path / "plain"
    plain.write_text("not a program\n")
    a = agent(tmp_path, [f"user={me()}", f"argv={plain}"])
    (r,) = probe(a, queue, ["u@x"])
    assert r.action == UNDELIVERABLE and "Permission denied" in r.reason
