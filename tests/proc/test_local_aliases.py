"""local's alias, .forward and :include: expansion, driven over a
socketpair as qmgr would, with a fake passwd and a fake resolver.

The agent is told it runs unprivileged (euid = alice's uid), so every
delivery runs as the test process; the root-only "as the right user"
checks are in tests/e2e/test_aliases_e2e.py.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from delivery_setup import enqueue, make_cfg, make_queue, over_socketpair, request_for  # noqa: E402
from test_local_agent import submit  # noqa: E402

from pfy.daemons.local.agent import LocalAgent, User  # noqa: E402
from pfy.daemons.local.expand import expand_forward_path, split_targets  # noqa: E402
from pfy.tables import open_table  # noqa: E402

UID = 4242 if os.geteuid() == 0 else os.geteuid()


@pytest.fixture
def env(tmp_path):
    queue = make_queue(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    alice = User("alice", UID, os.getegid(), str(home), "/bin/sh")
    return queue, alice, tmp_path


def agent(tmp, queue, alice, aliases: str, forwarded=None, **params):
    params.setdefault("home_mailbox", "Maildir/")
    params.setdefault("myorigin", "host")
    params.setdefault("recipient_delimiter", "+")
    cfg = make_cfg(tmp, **params)
    path = tmp / "aliases"
    # texthash: takes "name value" lines (an lmdb table built by postalias
    # is the e2e tests' business)
    path.write_text("".join(line.replace(":", " ", 1) + "\n"
                            for line in aliases.splitlines()))
    users = {"alice": alice, "nobody": User("nobody", UID, os.getegid(), "/", "/bin/sh")}
    a = LocalAgent(cfg, queue.root, getpw=users.get, euid=UID,
                   getpwuid=lambda uid: alice if uid == UID else None,
                   alias_tables=[open_table(f"texthash:{path}", cfg)],
                   resolve=lambda sender, addr: "local" if addr.endswith("@host") else "smtp")
    sent = forwarded if forwarded is not None else []

    def fake_submit(request, sender, rcpts, reader, delivered):
        sent.append((sender, list(rcpts), delivered))
        return f"FWD{len(sent)}"
    a._submit = fake_submit
    return a, sent


def run(a, queue, rcpts, body=(b"hello",), headers=()):
    if headers:
        qid, envl = enqueue(queue, rcpts, headers=headers, body=body)
    else:
        qid, envl = submit(queue, rcpts, body)
    return over_socketpair(a, request_for(qid, envl)).results


def maildir(alice):
    new = os.path.join(alice.home, "Maildir", "new")
    return [open(os.path.join(new, n), "rb").read() for n in sorted(os.listdir(new))]


@pytest.mark.parametrize("text, want", [
    ("a, b", ["a", "b"]),
    ('"|/usr/bin/foo arg", /tmp/x', ["|/usr/bin/foo arg", "/tmp/x"]),
    (":include:/etc/list, bob@y (Bob)", [":include:/etc/list", "bob@y"]),
    ("Bob <bob@y>, \\alice", ["bob@y", "\\alice"]),
    ('"a, b"@y, c', ['"a, b"@y', "c"]),
    ("|exit 67", ["|exit 67"]),
])
def test_split_targets(text, want):
    assert split_targets(text) == want


def test_forward_path_expansion():
    vals = {"home": "/h/a", "user": "a", "extension": "", "recipient_delimiter": ""}
    tmpl = "$home/.forward${recipient_delimiter}${extension}"
    # no extension: the entry is skipped (MAC_PARSE_UNDEF), "$home/.forward" is next
    assert expand_forward_path(tmpl, vals, "abc/.h") == (None, False)
    assert expand_forward_path("$home/.forward", vals, "abc/.h") == ("/h/a/.forward", False)
    assert expand_forward_path("$home/.forward+$extension", vals, "x") == (None, False)
    vals.update(extension="lists;rm", recipient_delimiter="+")
    assert expand_forward_path(tmpl, vals, "abcdefghijklmnopqrstuvwxyz/.+") == (
        "/h/a/.forward+lists_rm", True)
    assert expand_forward_path("${extension?x}${user:y}", vals, "a") == ("x", False)


def test_alias_to_local_user_is_delivered_in_place(env):
    queue, alice, tmp = env
    a, sent = agent(tmp, queue, alice, "postmaster: root\nroot: alice\n")
    (res,) = run(a, queue, ["postmaster@host"])
    assert (res.status, res.marked) == ("sent", True)
    assert sent == []
    (msg,) = maildir(alice)
    # frozen_delivered_to: the address the message came for
    assert b"Delivered-To: postmaster@host\n" in msg


def test_alias_to_remote_address_is_forwarded(env):
    queue, alice, tmp = env
    a, sent = agent(tmp, queue, alice, "list: bob@remote.example, carol@else.example, alice\n")
    (res,) = run(a, queue, ["list@host"])
    assert res.status == "sent"
    assert sent == [("bob@remote.example",
                     [("bob@remote.example", "LIST@HOST"), ("carol@else.example", "LIST@HOST")],
                     "list@host")]
    assert len(maildir(alice)) == 1


def test_self_reference_delivers_to_the_user(env):
    queue, alice, tmp = env
    a, sent = agent(tmp, queue, alice, "alice: alice, dave@remote.example\n")
    (res,) = run(a, queue, ["alice@host"])
    assert res.status == "sent"
    assert len(maildir(alice)) == 1
    assert [r for _, r, _ in sent] == [[("dave@remote.example", "ALICE@HOST")]]


def test_alias_loop_bounces(env):
    queue, alice, tmp = env
    a, _ = agent(tmp, queue, alice, "a: b\nb: a\n")
    (res,) = run(a, queue, ["a@host"])
    assert (res.status, res.dsn) == ("bounced", "5.4.6")
    assert "alias database loop for" in res.reason


def test_owner_alias_becomes_the_sender(env):
    queue, alice, tmp = env
    a, sent = agent(tmp, queue, alice, "list: bob@remote.example\nowner-list: alice\n")
    run(a, queue, ["list@host"])
    assert sent[0][0] == "owner-list@host"
    a, sent = agent(tmp, queue, alice, "list: bob@remote.example\nowner-list: alice\n",
                    expand_owner_alias="yes")
    run(a, queue, ["list@host"])
    assert sent[0][0] == "alice@host"


def test_extension_lookup_and_propagation(env):
    queue, alice, tmp = env
    a, sent = agent(tmp, queue, alice, "list: bob@remote.example\n",
                    propagate_unmatched_extensions="canonical, virtual, alias")
    run(a, queue, ["list+sub@host"])
    assert sent[0][1] == [("bob+sub@remote.example", "LIST+SUB@HOST")]
    a, sent = agent(tmp, queue, alice, "list: bob@remote.example\n")
    run(a, queue, ["list+sub@host"])
    assert sent[0][1] == [("bob@remote.example", "LIST+SUB@HOST")]


def test_command_and_file_targets(env):
    queue, alice, tmp = env
    out = tmp / "out"
    box = tmp / "box"
    a, _ = agent(tmp, queue, alice, f'cmd: "|cat > {out}"\nfile: {box}\n')
    res = run(a, queue, ["cmd@host", "file@host"])
    assert [r.status for r in res] == ["sent", "sent"]
    assert out.read_bytes().startswith(b"From bob@remote.example  ")
    assert b"Delivered-To: cmd@host\n" in out.read_bytes()
    assert box.read_bytes().startswith(b"From bob@remote.example  ")
    assert box.read_bytes().endswith(b"hello\n\n")


def test_file_target_dev_null_and_maildir(env):
    queue, alice, tmp = env
    a, _ = agent(tmp, queue, alice, f"null: /dev/null\nmd: {tmp}/md/\n")
    res = run(a, queue, ["null@host", "md@host"])
    assert [(r.status, r.reason) for r in res] == [("sent", "delivered to file: /dev/null"),
                                                   ("sent", "delivered to maildir")]
    assert len(os.listdir(tmp / "md" / "new")) == 1


def test_command_exit_codes(env):
    queue, alice, tmp = env
    a, _ = agent(tmp, queue, alice, 'tmp: "|echo busy; exit 75"\nperm: "|echo 5.1.2 gone; exit 67"\n')
    tmp_res, perm = run(a, queue, ["tmp@host", "perm@host"])
    assert (tmp_res.status, tmp_res.dsn) == ("deferred", "4.3.0")
    assert (perm.status, perm.dsn) == ("bounced", "5.1.2")
    assert "Command output: 5.1.2 gone" in perm.reason


def test_command_time_limit_bounces_with_the_output(env):
    """pipe_command.c, which Postfix's local uses too: a command still
    running at command_time_limit is killed and the mail bounced, 5.3.0,
    with what it wrote."""
    queue, alice, tmp = env
    a, _ = agent(tmp, queue, alice, 'slow: "|echo started; exec sleep 60"\n',
                 command_time_limit="1s")
    (r,) = run(a, queue, ["slow@host"])
    assert (r.status, r.dsn) == ("bounced", "5.3.0")
    assert r.reason == 'Command time limit exceeded: "echo started; exec sleep 60". ' \
                       "Command output: started"


def test_restricted_classes(env):
    queue, alice, tmp = env
    a, _ = agent(tmp, queue, alice, "cmd: |true\nfile: /dev/null\n",
                 allow_mail_to_commands="forward", allow_mail_to_files="forward")
    res = run(a, queue, ["cmd@host", "file@host"])
    assert [(r.status, r.dsn, r.reason) for r in res] == [
        ("bounced", "5.7.1", "mail to command is restricted"),
        ("bounced", "5.7.1", "mail to file is restricted")]


def test_include_file_and_its_restrictions(env):
    queue, alice, tmp = env
    lst = tmp / "list"
    lst.write_text("# members\nbob@remote.example\n|true\nalice\n")
    a, sent = agent(tmp, queue, alice, f"list: :include:{lst}\n")
    (res,) = run(a, queue, ["list@host"])
    # |true is not allowed from :include: by default: that part bounces
    assert (res.status, res.dsn) == ("bounced", "5.7.1")
    # members of an include file always go out in a new queue file
    assert sent[0][1] == [("bob@remote.example", "LIST@HOST"), ("alice@host", "LIST@HOST")]


def test_unreadable_include_defers(env):
    queue, alice, tmp = env
    a, _ = agent(tmp, queue, alice, f"list: :include:{tmp}/missing\n")
    (res,) = run(a, queue, ["list@host"])
    assert (res.status, res.dsn) == ("deferred", "4.3.0")
    assert res.reason.startswith(f"cannot open include file {tmp}/missing")


def test_dot_forward(env):
    queue, alice, tmp = env
    fwd = tmp / "home" / ".forward"
    fwd.write_text("\\alice, dave@remote.example\n")
    if os.geteuid() == 0:
        os.chown(fwd, UID, -1)
    a, sent = agent(tmp, queue, alice, "")
    (res,) = run(a, queue, ["alice@host"])
    assert res.status == "sent"
    assert len(maildir(alice)) == 1
    assert sent == [("bob@remote.example", [("dave@remote.example", "ALICE@HOST")], "alice@host")]


def test_dot_forward_with_extension_file(env):
    queue, alice, tmp = env
    (tmp / "home" / ".forward+lists").write_text("erin@remote.example\n")
    (tmp / "home" / ".forward").write_text("frank@remote.example\n")
    if os.geteuid() == 0:
        os.chown(tmp / "home" / ".forward+lists", UID, -1)
        os.chown(tmp / "home" / ".forward", UID, -1)
    a, sent = agent(tmp, queue, alice, "")
    run(a, queue, ["alice+lists@host"])
    assert sent[0][1] == [("erin@remote.example", "ALICE+LISTS@HOST")]


def test_empty_dot_forward_means_mailbox(env):
    queue, alice, tmp = env
    (tmp / "home" / ".forward").write_text("")
    a, sent = agent(tmp, queue, alice, "")
    (res,) = run(a, queue, ["alice@host"])
    assert res.status == "sent" and sent == []
    assert len(maildir(alice)) == 1


def test_delivered_to_loop_bounces(env):
    queue, alice, tmp = env
    a, _ = agent(tmp, queue, alice, "a: alice\n")
    (res,) = run(a, queue, ["a@host"], headers=[b"Delivered-To: alice@host", b"Subject: x"])
    assert (res.status, res.dsn, res.reason) == ("bounced", "5.4.6",
                                                 "mail forwarding loop for alice@host")


def test_unknown_user_bounces(env):
    queue, alice, tmp = env
    a, _ = agent(tmp, queue, alice, "x: nosuch\n")
    (res,) = run(a, queue, ["x@host"])
    assert (res.status, res.dsn, res.reason) == ("bounced", "5.1.1", 'unknown user: "nosuch"')


def test_partial_deferral_defers_the_whole_recipient(env):
    queue, alice, tmp = env
    a, _ = agent(tmp, queue, alice, 'x: alice, "|exit 75"\n')
    (res,) = run(a, queue, ["x@host"])
    assert res.status == "deferred" and not res.marked
