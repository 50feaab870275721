"""Queue files: record codec, IDs, writer/reader, done marks, corruption."""

import os
import subprocess

import pytest

from pfy.queue import CorruptQueueFile, Queue, is_queue_id
from pfy.queue import queue_id as qid
from pfy.queue.record import (REC_CONT, REC_NORM, REC_RCPT, RecordError,
                              RecordReader, encode_record)


@pytest.fixture
def queue(tmp_path):
    q = Queue(str(tmp_path / "q"))
    q.make_dirs()
    return q


def write_message(q, queue_name="incoming", rcpts=("b@y",), body=(b"Subject: hi", b"", b"body"),
                  now=None):
    with q.create(queue_name, now=now) as w:
        w.time()
        w.full_name("Alice")
        w.sender("a@x")
        w.attr("rewrite_context", "local")
        for r in rcpts:
            w.recipient(r, orig_rcpt="orig-" + r)
        w.begin_content()
        w.content_lines(body)
        w.end_content()
        w.commit()
        return w


# -- record codec ---------------------------------------------------------

@pytest.mark.parametrize("n, head", [
    (0, b"N\x00"), (127, b"N\x7f"), (128, b"N\x80\x01"), (300, b"N\xac\x02"),
    (16384, b"N\x80\x80\x01"),
])
def test_record_length_is_postfix_varint(n, head):
    assert encode_record(REC_NORM, b"x" * n)[:len(head)] == head


def test_record_reader_roundtrip_with_offsets(tmp_path):
    p = tmp_path / "f"
    recs = [(REC_NORM, b"a"), (REC_CONT, b"y" * 70000), (REC_RCPT, b"")]
    p.write_bytes(b"".join(encode_record(t, d) for t, d in recs))
    fd = os.open(p, os.O_RDONLY)
    got = list(RecordReader(fd))
    os.close(fd)
    assert [(t, d) for _, t, d in got] == recs
    assert [o for o, _, _ in got] == [0, 3, 3 + 1 + 3 + 70000]


@pytest.mark.parametrize("data", [b"N", b"N\x05abc", b"N\xff\xff\xff\xff\xff\xff"])
def test_record_reader_rejects_truncated_or_absurd(tmp_path, data):
    p = tmp_path / "f"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    with pytest.raises(RecordError):
        list(RecordReader(fd))
    os.close(fd)


# -- queue IDs -------------------------------------------------------------

def test_short_queue_id_is_usec_hex_then_inode_hex():
    assert qid.short_queue_id(0x03CE1, 0x8819A) == "03CE18819A"
    assert is_queue_id("03CE18819A")


def test_long_queue_id_format():
    # 6+ base-52 seconds, 4 base-52 microseconds, 'z', base-51 inode.
    i = qid.long_queue_id(1700000000, 123456, 1234567)
    sep = i.rindex("z")
    assert sep >= 10 and is_queue_id(i)
    assert qid.queue_id_usec(i) == 123456
    assert not set("AEIOUaeiou") & set(i)


@pytest.mark.parametrize("name", ["tmp.123.4", "", "abc", "03ce18819a", ".", "A/B"])
def test_non_queue_ids(name):
    assert not is_queue_id(name)


def test_hash_dirs_use_usec_hex_for_both_forms():
    short = qid.short_queue_id(0x3CE1, 99)
    long_ = qid.long_queue_id(1700000000, 0x3CE1, 99)
    assert qid.hash_dirs(short, 2) == ["0", "3"]
    assert qid.hash_dirs(long_, 2) == ["0", "3"]
    assert qid.hash_dirs(short, 0) == []


def test_ids_unique_across_many_files(queue):
    ids = {write_message(queue).queue_id for _ in range(200)}
    assert len(ids) == 200


def test_long_ids(tmp_path):
    q = Queue(str(tmp_path), long_ids=True)
    q.make_dirs()
    w = write_message(q)
    assert "z" in w.queue_id and is_queue_id(w.queue_id)
    assert [e.queue_id for e in q.ready_files("incoming")] == [w.queue_id]


# -- writer / reader ------------------------------------------------------

def test_roundtrip_envelope_and_content(queue):
    long_line = b"L" * 5000
    w = write_message(queue, rcpts=("b@y", "c@y"), body=(b"Subject: hi", b"", long_line, b"end"))
    [entry] = queue.ready_files("incoming")
    assert entry.queue_id == w.queue_id and entry.path == w.path
    with queue.open(entry) as r:
        env = r.read_envelope()
        assert (env.sender, env.full_name, env.attrs) == ("a@x", "Alice", {"rewrite_context": "local"})
        assert [(x.address, x.orig_rcpt, x.done) for x in env.recipients] == [
            ("b@y", "orig-b@y", False), ("c@y", "orig-c@y", False)]
        assert env.rcpt_count == 2
        assert env.message_size == len(b"Subject: hi\n\n" + long_line + b"\nend\n")
        assert list(r.content_lines()) == [b"Subject: hi", b"", long_line, b"end"]
        # Long lines are split into L records at 2048 like Postfix's.
        kinds = [t for t, _ in r.content_records()]
        assert kinds.count(REC_CONT) == 2


def test_null_sender_and_utf8_addresses(queue):
    with queue.create() as w:
        w.time()
        w.sender("")
        w.recipient("ü@bücher.example")
        w.commit()
    env = queue.open(queue.entry("incoming", w.queue_id)).read_envelope()
    assert env.sender == "" and env.recipients[0].address == "ü@bücher.example"


def test_extracted_recipients(queue):
    with queue.create() as w:
        w.time()
        w.sender("a@x")
        w.begin_content()
        w.content_line(b"To: c@y")
        w.end_content()
        w.recipient("c@y")
        w.commit()
    env = queue.open(queue.entry("incoming", w.queue_id)).read_envelope()
    assert [r.address for r in env.recipients] == ["c@y"]


def test_mark_done_in_place_survives_reopen(queue):
    w = write_message(queue, rcpts=("b@y", "c@y"))
    e = queue.entry("incoming", w.queue_id)
    size = os.path.getsize(e.path)
    with queue.open(e, writable=True) as r:
        r.mark_done(r.read_envelope().recipients[0])
    assert os.path.getsize(e.path) == size
    env = queue.open(e).read_envelope()
    assert [x.done for x in env.recipients] == [True, False]
    assert [x.address for x in env.pending] == ["c@y"]


def test_file_is_invisible_until_commit(queue):
    w = queue.create()
    w.time()
    w.sender("a@x")
    assert list(queue.ready_files("incoming")) == []
    assert os.path.basename(w.temp_path).startswith("tmp.")
    w.commit()
    assert [e.queue_id for e in queue.ready_files("incoming")] == [w.queue_id]
    assert os.stat(w.path).st_mode & 0o777 == 0o700


def test_abort_and_exception_remove_temp(queue):
    with pytest.raises(RuntimeError):
        with queue.create() as w:
            w.time()
            raise RuntimeError("client went away")
    assert os.listdir(queue.dir("incoming")) == []


def test_maildrop_extra_mode(queue):
    with queue.create("maildrop", extra_mode=0o044) as w:
        w.time()
        w.commit()
    assert os.stat(w.path).st_mode & 0o777 == 0o744


def test_stale_temp_files(queue):
    dead = os.path.join(queue.dir("incoming"), "tmp.999999999.0")
    open(dead, "w").close()
    live = queue.create()
    removed = queue.remove_stale_temp_files("incoming")
    assert removed == [dead] and os.path.exists(live.temp_path)
    # Old enough: removed even if the pid looks alive.
    assert queue.remove_stale_temp_files("incoming", now=os.path.getmtime(live.temp_path) + 90000)
    live.abort()


def test_unready_mode_not_listed(queue):
    w = write_message(queue)
    os.chmod(w.path, 0o600)
    assert list(queue.ready_files("incoming")) == []


# -- hashing and moves ------------------------------------------------------

def test_hashed_queues_and_moves(tmp_path):
    q = Queue(str(tmp_path), hash_queue_depth=2, hash_queue_names=["deferred", "defer"])
    q.make_dirs()
    w = write_message(q)
    e = q.entry("incoming", w.queue_id)
    a = q.move(e, "active")
    d = q.move(a, "deferred")
    assert d.path == os.path.join(str(tmp_path), "deferred", *qid.hash_dirs(w.queue_id, 2), w.queue_id)
    assert [x.queue_id for x in q.ready_files("deferred")] == [w.queue_id]
    assert q.find(w.queue_id) == d
    assert q.log_path("defer", w.queue_id).startswith(os.path.join(str(tmp_path), "defer", w.queue_id[0]))
    assert q.remove(d) and not q.remove(d)


# -- corruption -------------------------------------------------------------

def corrupt_variants(data: bytes):
    yield "truncated", data[:-5]
    yield "no end", data[:-2]
    yield "garbage", b"\x00\x01\x02"
    yield "bad size", b"C\x03abc" + data[81:]
    yield "empty", b""


@pytest.mark.parametrize("kind", ["truncated", "no end", "garbage", "bad size", "empty"])
def test_corrupt_files_raise_and_move(queue, kind):
    w = write_message(queue)
    data = open(w.path, "rb").read()
    bad = dict(corrupt_variants(data))[kind]
    with open(w.path, "wb") as f:
        f.write(bad)
    e = queue.entry("incoming", w.queue_id)
    with pytest.raises(CorruptQueueFile) as info:
        queue.open(e).read_envelope()
    assert w.path in str(info.value)
    lines = []
    c = queue.move_to_corrupt(e, str(info.value), log=lines.append)
    assert lines == [f"{w.queue_id}: {info.value}; moving to corrupt queue"]
    assert os.path.exists(c.path) and list(queue.ready_files("corrupt")) == []


def test_kill_mid_write_leaves_no_message(queue, tmp_path):
    # A writer killed before commit leaves only a tmp. file: never listed,
    # and swept once its pid is gone.
    pid = os.fork()
    if pid == 0:
        w = queue.create()
        w.time()
        w.sender("a@x")
        w._flush()
        os.kill(os.getpid(), 9)
    os.waitpid(pid, 0)
    assert list(queue.ready_files("incoming")) == []
    assert len(queue.remove_stale_temp_files("incoming")) == 1


def test_debian_postcat_reads_our_files(queue, tmp_path):
    postcat = "/usr/sbin/postcat"
    if not os.path.exists(postcat):
        pytest.skip("Debian's postfix is not installed")
    conf = tmp_path / "pfconf"
    conf.mkdir()
    (conf / "main.cf").write_text("")
    w = write_message(queue, rcpts=("b@y", "c@y"))
    with queue.open(queue.entry("incoming", w.queue_id), writable=True) as r:
        r.mark_done(r.read_envelope().recipients[0])
    out = subprocess.run([postcat, "-c", str(conf), w.path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for want in ["sender: a@x", "named_attribute: rewrite_context=local",
                 "original_recipient: orig-b@y", "done_recipient: b@y",
                 "recipient: c@y", "\nSubject: hi\n\nbody\n", "*** MESSAGE FILE END"]:
        assert want in text, f"got {text!r} want {want!r}"
