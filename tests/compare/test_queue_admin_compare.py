"""Queue administration against Debian's Postfix on the same queue files.

pfy writes queue files in Postfix's record format, so Debian's tools read
them: postcat on the same file must print the same bytes as ours, and
Debian's postqueue -p / -j (run as root with its master down, it runs its
showq stand-alone over the queue directory, no daemons needed) must print
what our postqueue prints for the same queue.
"""

import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from tests.conftest import needs_root, pfy_bin, postfix_bin

from pfy.queue import Queue

T = 1700000000.5


def run(argv, **kw):
    env = dict(os.environ, TZ="UTC")
    env.pop("MAIL_CONFIG", None)
    return subprocess.run(argv, capture_output=True, env=env, timeout=60, **kw)


@pytest.fixture
def site():
    """A folder both instances can use: Debian's conf/, our pconf/, queue/."""
    root = tempfile.mkdtemp(prefix="pfy-qa-", dir="/tmp")
    os.chmod(root, 0o755)
    q = os.path.join(root, "queue")
    for d in ("conf", "pconf"):
        os.mkdir(os.path.join(root, d))
    with open(os.path.join(root, "conf", "main.cf"), "w") as f:
        f.write(f"queue_directory = {q}\ndata_directory = {root}/data\n"
                f"maillog_file = {root}/maillog\nmaillog_file_prefixes = {root}\n"
                "compatibility_level = 3.6\n")
    if os.path.exists("/etc/postfix/master.cf"):
        shutil.copy("/etc/postfix/master.cf", os.path.join(root, "conf"))
    with open(os.path.join(root, "pconf", "main.cf"), "w") as f:
        f.write(f"queue_directory = {q}\nmaillog_file = {root}/pfy.log\n")
    queue = Queue(q)
    queue.make_dirs()
    yield root, queue
    shutil.rmtree(root, ignore_errors=True)


def write(q, queue_name, sender, rcpts, lines, extra=None, done=()):
    with q.create(queue_name) as w:
        w.time(T)
        w.full_name("Alice Example")
        w.sender(sender)
        w.attr("rewrite_context", "local")
        w.attr("log_client_name", "localhost")
        w.dsn(ret=1, envid="ENV1")
        offs = [w.recipient(r, orig_rcpt=r if i == 0 else "", dsn_notify=2 if i else 0)
                for i, r in enumerate(rcpts)]
        w.warn_time(int(T) + 3600)
        w.begin_content()
        for line in lines:
            w.content_line(line)
        w.end_content()
        if extra:
            w.recipient(extra)
        qid = w.commit()
    for i in done:
        fd = os.open(w.path, os.O_RDWR)
        os.pwrite(fd, b"D", offs[i])
        os.close(fd)
    return qid, w.path


CONTENT = [b"Received: by localhost", b"\tid 1234; Tue, 14 Nov 2023", b"Subject: hi",
           b"From: Alice <a@example.com>", b"", b"body line", b"From me", b"x" * 5000,
           b"  indented", b"", b"caf\xc3\xa9 8bit"]


@pytest.mark.parametrize("opts", [[], ["-e"], ["-h"], ["-b"], ["-bh"], ["-eb"],
                                  ["-o"], ["-d"], ["-v"], ["-ov"], ["-r"],
                                  ["-s", "0"], ["-h", "-o"]])
def test_postcat_same_output_as_postfix(site, opts):
    root, q = site
    _, path = write(q, "deferred", "a@example.com", ["b@example.net", "c@example.org"],
                    CONTENT, extra="d@example.com", done=[1])
    theirs = run([postfix_bin("postcat"), "-c", f"{root}/conf", *opts, path])
    ours = run([pfy_bin("postcat"), "-c", f"{root}/pconf", *opts, path])
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout == theirs.stdout, (
        f"got:\n{ours.stdout.decode(errors='replace')}\n"
        f"want:\n{theirs.stdout.decode(errors='replace')}")


def test_postcat_q_searches_the_queues(site):
    root, q = site
    qid, _ = write(q, "hold", "", ["b@example.net"], [b"Subject: x", b"", b"y"])
    os.chdir(q.root)
    theirs = run([postfix_bin("postcat"), "-c", f"{root}/conf", "-q", qid])
    ours = run([pfy_bin("postcat"), "-c", f"{root}/pconf", "-q", qid])
    assert ours.stdout == theirs.stdout and b"hold/" + qid.encode() in ours.stdout
    bad = run([pfy_bin("postcat"), "-c", f"{root}/pconf", "-q", "ABCDEF999"])
    assert bad.returncode == 1
    assert bad.stderr == b"postcat: fatal: open queue file ABCDEF999: No such file or directory\n"


def test_postcat_rejects_non_queue_file(site, tmp_path):
    root, _ = site
    p = tmp_path / "plain"
    p.write_bytes(b"hello\n")
    ours = run([pfy_bin("postcat"), "-c", f"{root}/pconf", str(p)])
    assert ours.returncode == 0 and ours.stdout == b""
    assert b"input is not a valid queue file" in ours.stderr


@pytest.mark.parametrize("flag", ["-p", "-j"])
def test_postqueue_listing_same_as_postfix(site, flag):
    needs_root()
    try:
        pw = pwd.getpwnam("postfix")
    except KeyError:
        pytest.skip("no postfix user for Debian's showq")
    root, q = site
    write(q, "active", '"odd name"@example.com', ["b@example.net"], CONTENT)
    d, _ = write(q, "deferred", "a@example.com",
                 ["b@example.net", "c@example.net", "e@example.org"], CONTENT, done=[2])
    write(q, "hold", "", ["x@example.com"], [b"Subject: bounce", b"", b"text"])
    write(q, "incoming", "z@example.com", ["q@example.com"], [b"", b"x"])
    log = q.log_path("defer", d)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        for r in ("b@example.net", "c@example.net"):
            f.write(f"recipient={r}\noffset=100\nstatus=4.4.1\naction=delayed\n"
                    "reason=connect to example.net[192.0.2.1]:25: Connection refused\n\n")
    for dirpath, dirs, files in os.walk(q.root):
        for n in dirs + files:
            os.chown(os.path.join(dirpath, n), pw.pw_uid, pw.pw_gid)
    os.chown(q.root, pw.pw_uid, pw.pw_gid)
    theirs = run([postfix_bin("postqueue"), "-c", f"{root}/conf", flag])
    ours = run([pfy_bin("postqueue"), "-c", f"{root}/pconf", flag])
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout, (
        f"got:\n{ours.stdout.decode()}\nwant:\n{theirs.stdout.decode()}")
    assert b"Mail system is down -- accessing queue directly" in ours.stderr
