"""Issue 7 part 4: the error, retry and discard transports, reached from
transport_maps, end to end (sendmail -> ... -> qmgr -> error/discard), with
Postfix's log lines.  Run by an ordinary user: no privileges matter here."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from instance import Instance
from localusers import local_users

QID = r"[0-9A-Za-z]+"


@contextlib.contextmanager
def ordinary_instance(tmp_path: Path, main_cf: dict[str, str], master_cf: str | None = None):
    """An instance run by an ordinary user: a throw-away one when we are root."""
    if os.geteuid() != 0:
        with Instance(tmp_path / "inst", main_cf=main_cf, master_cf=master_cf) as inst:
            yield inst, None
        return
    with local_users(tmp_path, 1, prefix="pfye") as (me,):
        root = tmp_path / "inst"
        root.mkdir()
        os.chown(root, me.pw_uid, me.pw_gid)
        with Instance(root, main_cf=main_cf, master_cf=master_cf, user=me.pw_name) as inst:
            yield inst, me


def sendmail(inst: Instance, *args: str) -> None:
    p = inst.command("sendmail", *args, input=b"Subject: t\n\nhi\n")
    assert p.returncode == 0, p.stderr.decode()


def status_line(prog: str, rcpt: str, dsn: str, status: str, reason: str) -> str:
    return (rf"postfix/{prog}\[\d+\]: {QID}: to=<{re.escape(rcpt)}>, relay=none, "
            rf"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn={re.escape(dsn)}, "
            rf"status={status} \({re.escape(reason)}\)")


def test_error_retry_and_discard_from_transport_maps(tmp_path):
    (tmp_path / "transport").write_text(
        "err.example      error:5.7.1 go away\n"
        "plain.example    error:no status code here\n"
        "wrongclass.example error:4.1.1 a 4xx code on the error service\n"
        "ret.example      retry:4.4.4 try again later\n"
        "plainret.example retry:later\n"
        "dis.example      discard:2.0.0 silently dropped\n"
        "disdom.example   discard:\n")
    os.chmod(tmp_path, 0o755)
    (tmp_path / "transport").chmod(0o644)
    with ordinary_instance(tmp_path, {"transport_maps": f"texthash:{tmp_path}/transport",
                                      "default_transport": "error:5.3.0 no default route"}
                           ) as (inst, _):
        inst.start()
        sendmail(inst, "u@err.example")
        inst.wait_for_log(status_line("error", "u@err.example", "5.7.1", "bounced", "go away"),
                          timeout=30)
        sendmail(inst, "u@plain.example")
        inst.wait_for_log(status_line("error", "u@plain.example", "5.0.0", "bounced",
                                      "no status code here"), timeout=30)
        sendmail(inst, "u@wrongclass.example")
        inst.wait_for_log(status_line("error", "u@wrongclass.example", "5.0.0", "bounced",
                                      "a 4xx code on the error service"), timeout=30)
        sendmail(inst, "u@ret.example")
        inst.wait_for_log(status_line("error", "u@ret.example", "4.4.4", "deferred",
                                      "try again later"), timeout=30)
        sendmail(inst, "u@plainret.example")
        inst.wait_for_log(status_line("error", "u@plainret.example", "4.0.0", "deferred",
                                      "later"), timeout=30)
        sendmail(inst, "u@dis.example")
        inst.wait_for_log(status_line("discard", "u@dis.example", "2.0.0", "sent",
                                      "silently dropped"), timeout=30)
        sendmail(inst, "u@disdom.example")
        inst.wait_for_log(status_line("discard", "u@disdom.example", "2.0.0", "sent",
                                      "disdom.example"), timeout=30)
        sendmail(inst, "u@elsewhere.example")            # default_transport = error:
        inst.wait_for_log(status_line("error", "u@elsewhere.example", "5.3.0", "bounced",
                                      "no default route"), timeout=30)
        # The discarded message is gone; the retried ones wait in deferred/.
        inst.wait_until(lambda: any((inst.queue_dir / "deferred").rglob("*")
                                    if (inst.queue_dir / "deferred").exists() else []),
                        timeout=15, what="a deferred queue file")


def test_soft_bounce_turns_error_into_deferral(tmp_path):
    (tmp_path / "transport").write_text("err.example error:5.7.1 go away\n")
    os.chmod(tmp_path, 0o755)
    (tmp_path / "transport").chmod(0o644)
    with ordinary_instance(tmp_path, {"transport_maps": f"texthash:{tmp_path}/transport",
                                      "soft_bounce": "yes"}) as (inst, _):
        inst.start()
        sendmail(inst, "u@err.example")
        inst.wait_for_log(status_line("error", "u@err.example", "4.7.1", "deferred", "go away"),
                          timeout=30)
