"""Sequential sendmail runs per second: pfy's sendmail against Debian's
Postfix /usr/sbin/sendmail, both into a stopped instance's maildrop/.

    python3 bench/bench_sendmail.py [--runs 150] [--sendmail PATH] [--keep]

sendmail runs once per message, so its start-up is the cost (issue 3:
target >= 0.5x Postfix's rate).  Each run submits the same small message
and exits only after the maildrop file is fsynced (both implementations).

pfy's side is measured as users install it: a throw-away virtualenv with a
non-editable `pip install` of this checkout (no editable finder .pth),
unless --sendmail names an installed sendmail.  Postfix's side is a private
config folder (main.cf with its own queue_directory in a temporary folder;
maildrop/ 1730 postfix:postdrop, public/ 2710, as `postfix set-permissions`
makes them); Postfix's sendmail execs its set-group-ID postdrop, which works
with the instance stopped and leaves the files in maildrop/.  Nothing is
started, nothing listens.  The two are measured in alternating rounds so
that machine noise hits both alike.  Root is needed for the Postfix side
(chown to postfix:postdrop).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
MESSAGE = b"Subject: bench\n\nhello\n"


def make_venv(root: Path) -> Path:
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(HERE)], check=True,
                   stdout=subprocess.DEVNULL)
    return venv / "bin" / "sendmail"


def pfy_instance(root: Path) -> Path:
    cf = root / "pfy-config"
    q = root / "pfy-queue"
    cf.mkdir()
    (q / "maildrop").mkdir(parents=True)
    (q / "public").mkdir()
    (cf / "main.cf").write_text(f"queue_directory = {q}\n")
    # postdrop(1): maildrop 3733 owned by mail_owner, public 0711.
    os.chmod(q / "maildrop", 0o3733)
    os.chmod(q / "public", 0o711)
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam("postfix")
        os.chown(q / "maildrop", pw.pw_uid, pw.pw_gid)
    return cf


def postfix_instance(root: Path) -> Path | None:
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/postdrop"):
        return None
    import grp
    import pwd
    cf = root / "pf-config"
    q = root / "pf-queue"
    cf.mkdir()
    (q / "maildrop").mkdir(parents=True)
    (q / "public").mkdir()
    (root / "pf-data").mkdir()
    (cf / "main.cf").write_text(
        "compatibility_level = 3.6\n"
        f"queue_directory = {q}\ndata_directory = {root}/pf-data\n"
        f"maillog_file = {root}/pf-maillog\nmaillog_file_prefixes = {root}\n"
        "inet_interfaces = loopback-only\n")
    if os.path.exists("/etc/postfix/master.cf"):
        shutil.copy("/etc/postfix/master.cf", cf / "master.cf")
    uid = pwd.getpwnam("postfix").pw_uid
    gid = grp.getgrnam("postdrop").gr_gid
    for d, mode in (("maildrop", 0o1730), ("public", 0o2710)):
        os.chown(q / d, uid, gid)
        os.chmod(q / d, mode)
    os.chown(root / "pf-data", uid, -1)
    os.chmod(root, 0o755)
    return cf


def rate(argv: list[str], runs: int, maildrop: Path) -> float:
    with tempfile.TemporaryFile() as msg:
        msg.write(MESSAGE)
        t0 = time.perf_counter()
        for _ in range(runs):
            msg.seek(0)
            p = subprocess.run(argv, stdin=msg, stderr=subprocess.PIPE)
            if p.returncode != 0:
                raise SystemExit(f"{argv[0]}: exit {p.returncode}: {p.stderr.decode().strip()}")
        elapsed = time.perf_counter() - t0
    for f in maildrop.iterdir():        # same folder size for every round
        f.unlink()
    return runs / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=150, help="runs per implementation")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sendmail", help="pfy's sendmail (default: a fresh venv)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pfy-bench-sendmail-"))
    try:
        sendmail = Path(args.sendmail) if args.sendmail else make_venv(root)
        pfy_cf = pfy_instance(root)
        pf_cf = postfix_instance(root)
        per_round = max(1, args.runs // args.rounds)
        ours: list[float] = []
        theirs: list[float] = []
        pfy_argv = [str(sendmail), "-C", str(pfy_cf), "bench@example.com"]
        pf_argv = ["/usr/sbin/sendmail", "-C", str(pf_cf), "bench@example.com"]
        for argv, maildrop in ((pfy_argv, root / "pfy-queue" / "maildrop"),
                               (pf_argv, root / "pf-queue" / "maildrop")):
            if maildrop.parent.exists():
                rate(argv, 3, maildrop)          # warm the page cache
        for _ in range(args.rounds):
            ours.append(rate(pfy_argv, per_round, root / "pfy-queue" / "maildrop"))
            if pf_cf is not None:
                theirs.append(rate(pf_argv, per_round, root / "pf-queue" / "maildrop"))
        py = rate([str(sendmail.parent / "python3"), "-c", "pass"], per_round,
                  root / "pfy-queue" / "maildrop") if (sendmail.parent / "python3").exists() else 0
        a = sorted(ours)[len(ours) // 2]
        print(f"pfy sendmail      {a:7.1f} runs/s  ({1000 / a:.1f} ms a run; "
              f"rounds {', '.join(f'{x:.1f}' for x in ours)})")
        if py:
            print(f"  (python3 -c pass {py:6.1f} runs/s: the interpreter's own floor)")
        if theirs:
            b = sorted(theirs)[len(theirs) // 2]
            print(f"Postfix sendmail  {b:7.1f} runs/s  ({1000 / b:.1f} ms a run; "
                  f"rounds {', '.join(f'{x:.1f}' for x in theirs)})")
            print(f"ratio pfy/Postfix {a / b:7.2f}  (target >= 0.5)")
        else:
            print("Postfix sendmail: skipped (needs root and Debian's postfix package)")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
