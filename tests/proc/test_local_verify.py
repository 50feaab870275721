"""local(8) and sendmail -bv: a trace-only request (DEL_REQ_FLAG_USR_VRFY)
resolves aliases, .forward files and users and answers deliverable or
undeliverable with the reason, but writes no mailbox, runs no command,
forwards nothing and marks nothing done (Postfix's DEL_REQ_TRACE_ONLY
branches in local/mailbox.c, command.c, file.c and indirect.c)."""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from delivery_setup import over_socketpair, request_for  # noqa: E402
from test_local_aliases import agent, env  # noqa: E402,F401
from test_local_agent import submit  # noqa: E402

from pfy.ipc.delivery import (DEL_REQ_FLAG_USR_VRFY, DELIVERABLE, UNDELIVERABLE,  # noqa: E402
                              VERIFY_AGENTS)
from pfy.queue.queue_file import QueueFileReader  # noqa: E402


def probe(a, queue, rcpts):
    qid, envl = submit(queue, rcpts)
    req = dataclasses.replace(request_for(qid, envl), flags=DEL_REQ_FLAG_USR_VRFY)
    results = over_socketpair(a, req).results
    with QueueFileReader(queue.path("active", qid)) as r:
        pending = [x.address for x in r.read_envelope().recipients if not x.done]
    return {res.address: res for res in results}, pending


def test_probe_resolves_aliases_without_delivering(env):
    queue, alice, tmp = env
    out = tmp / "out.mbox"
    stamp = tmp / "ran"
    a, forwarded = agent(tmp, queue, alice,
                         "postmaster: alice\n"
                         f"list: alice, carol@remote.example, {out}, \"|touch {stamp}\"\n",
                         allow_mail_to_files="alias", allow_mail_to_commands="alias")
    res, pending = probe(a, queue, ["postmaster@host", "list@host", "alice@host",
                                    "nobody-here@host"])
    assert (res["postmaster@host"].status, res["postmaster@host"].action) == ("sent", DELIVERABLE)
    assert "delivers to maildir" in res["postmaster@host"].reason
    lst = res["list@host"]
    assert (lst.status, lst.action) == ("sent", DELIVERABLE)
    for want in ("<alice@host>: delivers to maildir", "<carol@remote.example>: forwards to "
                 "carol@remote.example", f"delivers to file: {out}",
                 f"delivers to command: touch {stamp}"):
        assert want in lst.reason, (want, lst.reason)
    assert res["alice@host"].reason == "delivers to maildir"
    bad = res["nobody-here@host"]
    assert (bad.status, bad.dsn, bad.action) == ("bounced", "5.1.1", UNDELIVERABLE)
    assert 'unknown user: "nobody-here"' in bad.reason
    # nothing written, run, forwarded or marked
    assert not os.path.exists(os.path.join(alice.home, "Maildir"))
    assert not out.exists() and not stamp.exists()
    assert forwarded == []
    assert not any(r.marked for r in res.values())
    assert sorted(pending) == sorted(res)


def test_probe_reads_dot_forward(env):
    queue, alice, tmp = env
    (tmp / "home" / ".forward").write_text("elsewhere@remote.example\n")
    a, forwarded = agent(tmp, queue, alice, "")
    res, _ = probe(a, queue, ["alice@host"])
    r = res["alice@host"]
    assert (r.status, r.action) == ("sent", DELIVERABLE)
    assert "forwards to elsewhere@remote.example" in r.reason
    assert forwarded == []


def test_expansion_result_says_expanded(env):
    queue, alice, tmp = env
    a, forwarded = agent(tmp, queue, alice, "team: alice, carol@remote.example\n")
    qid, envl = submit(queue, ["team@host", "alice@host"])
    results = {r.address: r for r in over_socketpair(a, request_for(qid, envl)).results}
    assert (results["team@host"].status, results["team@host"].action) == ("sent", "expanded")
    assert results["alice@host"].action == ""          # delivered, not expanded
    assert len(forwarded) == 1


def test_local_virtual_and_pipe_answer_probes_themselves():
    # qmgr sends sendmail -bv probes only to agents that honour verify_only.
    assert {"local", "virtual", "pipe"} <= VERIFY_AGENTS
