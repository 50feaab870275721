"""The built-in user table: scrypt hashes, LMDB storage, concurrent update."""

import os
import subprocess
import sys

import pytest

from pfy.sasl import userdb
from pfy.sasl.userdb import (UserTable, delete_user, hash_password, list_users, set_password,
                             verify_password)

FAST = {"log_n": 4}          # tests only: the table keeps the parameters per hash


def test_hash_format_and_verify():
    h = hash_password("s3cret", **FAST)
    assert h.startswith("$scrypt$ln=4,r=8,p=1$")
    assert verify_password("s3cret", h)
    assert not verify_password("s3cret ", h)
    assert not verify_password("", h)


def test_default_parameters_are_interactive_strength():
    h = hash_password("x")
    assert h.startswith("$scrypt$ln=14,r=8,p=1$")


def test_salt_is_per_hash():
    assert hash_password("same", **FAST) != hash_password("same", **FAST)


@pytest.mark.parametrize("stored", [
    None, "", "plain-text-password", "$scrypt$ln=4,r=8,p=1$$", "$scrypt$ln=99,r=8,p=1$AAAA$AAAA",
    "$scrypt$ln=4,r=8,p=1$!!!!$AAAA", "{CRYPT}$6$abc$def",
])
def test_malformed_or_missing_never_matches(stored):
    assert verify_password("anything", stored) is False


def test_table_set_lookup_delete_list(tmp_path):
    name = str(tmp_path / "sasl_users")
    set_password(name, "alice", "pw1", **FAST)
    set_password(name, "Bob@Example.com", "pw2", **FAST)
    assert os.path.exists(name + ".lmdb")
    assert os.stat(name + ".lmdb").st_mode & 0o007 == 0        # never world-readable
    t = UserTable(name)
    assert verify_password("pw1", t.lookup("alice"))
    assert t.lookup("ALICE") is None                           # user names are case-sensitive
    assert verify_password("pw2", t.lookup("Bob@Example.com"))
    t.close()       # py-lmdb: one environment per file per process
    assert sorted(list_users(name)) == ["Bob@Example.com", "alice"]
    assert delete_user(name, "alice") is True
    assert delete_user(name, "alice") is False
    t = UserTable(name)
    assert t.lookup("alice") is None
    t.close()


def _in_child(code: str) -> None:
    """Write as pfy-saslpasswd does: from another process."""
    subprocess.run([sys.executable, "-c", "from pfy.sasl import userdb\n" + code], check=True)


def test_open_reader_sees_updates_without_reopening(tmp_path):
    # smtpd opens the table before chroot and never reopens it by path.
    name = str(tmp_path / "u")
    set_password(name, "a", "old", **FAST)
    t = UserTable(name)
    _in_child(f"userdb.set_password({name!r}, 'a', 'new', log_n=4)")
    assert verify_password("new", t.lookup("a"))
    # Grow the file well past the reader's map: the reader adopts the new size.
    _in_child(f"userdb._write({name!r}, lambda txn: [txn.put(b'pad%d' % i, b'x' * 400) "
              f"for i in range(6000)], create=False)")
    assert os.path.getsize(name + ".lmdb") > 2 * 1024 * 1024
    assert verify_password("new", t.lookup("a"))
    assert t.lookup("pad5999") == "x" * 400
    t.close()


def test_missing_table_is_an_error(tmp_path):
    with pytest.raises(userdb.UserTableError, match="sasl_users.lmdb"):
        UserTable(str(tmp_path / "sasl_users"))


def test_unusable_user_names(tmp_path):
    name = str(tmp_path / "u")
    set_password(name, "a", "x", **FAST)
    t = UserTable(name)
    assert t.lookup("") is None
    assert t.lookup("x" * 600) is None
    with pytest.raises(ValueError):
        set_password(name, "", "x", **FAST)
