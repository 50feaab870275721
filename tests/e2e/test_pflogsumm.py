"""Issue 4 part 5: Debian's pflogsumm reads our log as Postfix's.

One test run produces received (sendmail and SMTP), delivered (local
Maildir and discard:), forwarded (luser_relay), deferred (retry:) and
bounced (error:) mail for a few domains; pflogsumm over the instance's
maillog must report the right totals and per-domain figures.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest

from instance import Instance
from localusers import local_users, traversable_tmp

HOST = "localhost.localdomain"
PFLOGSUMM = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"

pytestmark = pytest.mark.skipif(not os.path.exists(PFLOGSUMM),
                                reason="pflogsumm is not installed (apt-get install pflogsumm)")


def grand_totals(report: str) -> dict[str, int]:
    """"Grand Totals" -> {"received": 5, "delivered": 4, "deferred": 1, ...}"""
    section = report.split("Grand Totals", 1)[1].split("Per-Day", 1)[0]
    out = {}
    for m in re.finditer(r"^\s*(\d+)\s+(received|delivered|forwarded|deferred|bounced|"
                         r"rejected|reject warnings|held|discarded)\b", section, re.M):
        out[m.group(2)] = int(m.group(1))
    return out


def domain_table(report: str, title: str) -> dict[str, list[str]]:
    """A "Host/Domain Summary" table: domain -> its figures (as text)."""
    try:
        section = report.split(title, 1)[1]
    except IndexError:
        return {}
    rows = {}
    for line in section.split("\n\n", 1)[0].splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            rows[parts[-1]] = parts[:-1]
    return rows


def test_pflogsumm_counts_our_log():
    with traversable_tmp() as tmp, local_users(tmp, 1, prefix="pfys") as (me,):
        root = tmp / "inst"
        root.mkdir()
        os.chown(root, me.pw_uid, me.pw_gid)
        tfile = tmp / "transport"
        tfile.write_text("dead.example error:5.1.1 no such user here\n"
                         "slow.example retry:4.4.1 try again later\n"
                         "far.example discard:accepted by the far side\n")
        cf = {"home_mailbox": "Maildir/", "alias_maps": "",
              "transport_maps": f"texthash:{tfile}",
              "luser_relay": f"{me.pw_name}@{HOST}",
              "local_recipient_maps": "",
              "minimal_backoff_time": "300s", "queue_run_delay": "300s"}
        with Instance(root, main_cf=cf, user=me.pw_name) as inst:
            inst.start()
            sender = f"{me.pw_name}@{HOST}"

            def sendmail(*rcpts):
                p = inst.command("sendmail", "-f", sender, *rcpts,
                                 input=b"Subject: pflogsumm\n\nhello\n")
                assert p.returncode == 0, p.stderr.decode()
            sendmail(me.pw_name)                               # delivered (local)
            sendmail(me.pw_name)                               # delivered (local)
            sendmail("nosuchuser")                             # forwarded (luser_relay)
            sendmail("u@dead.example")                         # bounced
            sendmail("v@slow.example")                         # deferred
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
                s.sendmail("remote@client.example", ["w@far.example"],
                           b"Subject: pflogsumm\r\n\r\nhello\r\n")   # received by SMTP, delivered
            inst.wait_for_log(r"status=deferred", timeout=30)
            inst.wait_for_log(r"status=bounced", timeout=30)
            inst.wait_for_log(r"forwarded as", timeout=30)
            inst.wait_for_log(r"to=<w@far\.example>.*status=sent", timeout=30)
            # two local deliveries, the forwarded copy and the bounce notice
            inst.wait_for_log(r"status=sent \(delivered to maildir", timeout=30, count=4)
            inst.wait_until(lambda: len(re.findall(r"qmgr\[\d+\]: \w+: removed", inst.log())) >= 7,
                            timeout=30, what="all but the deferred message removed")
            p = subprocess.run([PFLOGSUMM, "--smtpd-stats", str(inst.maillog)],
                               capture_output=True, timeout=60)
            report = p.stdout.decode(errors="replace")
            assert p.returncode == 0, p.stderr.decode()
            totals = grand_totals(report)
            # received: 5 by sendmail (pickup) + 1 by SMTP; the forwarded copy
            # and the bounce notice are made inside and not "received".
            # delivered: 2 local, the forwarded copy, the notice, discard.
            want = {"received": 6, "delivered": 5, "forwarded": 1, "deferred": 1,
                    "bounced": 1, "rejected": 0}
            got = {k: totals.get(k) for k in want}
            assert got == want, f"got {got} want {want}\n{report}"
            delivery = domain_table(report, "Host/Domain Summary: Message Delivery")
            # sent cnt, bytes, defers, avg dly, max dly per domain
            got = {d: (int(v[0]), int(v[2])) for d, v in delivery.items()}
            want = {HOST: (4, 0), "far.example": (1, 0), "slow.example": (0, 1)}
            assert got == want, f"got {got} want {want}\n{report}"
            received = domain_table(report, "Host/Domain Summary: Messages Received")
            got = {d: int(v[0]) for d, v in received.items()}
            assert got == {HOST: 5, "client.example": 1}, report
            assert "no such user here" in report               # bounce detail
            assert "try again later" in report                 # deferral detail
