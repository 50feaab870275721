"""copy_chroot_files(): the /etc files a jailed daemon needs, copied into
queue_directory/etc when missing or different, never touched otherwise."""

from pfy.server.layout import CHROOT_FILES, copy_chroot_files


def test_copies_missing_and_changed_files_only(tmp_path):
    src = tmp_path / "root"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (src / "etc" / "services").write_text("smtp 25/tcp\n")
    q = tmp_path / "queue"
    q.mkdir()
    changes = copy_chroot_files(str(q), source_root=str(src))
    assert len(changes) == 2
    assert (q / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert oct((q / "etc" / "hosts").stat().st_mode & 0o777) == "0o644"
    assert copy_chroot_files(str(q), source_root=str(src)) == []     # unchanged
    (src / "etc" / "hosts").write_text("127.0.0.1 localhost mail\n")
    assert copy_chroot_files(str(q), source_root=str(src)) == [
        f"copied {src}/etc/hosts to {q}/etc/hosts"]
    assert (q / "etc" / "hosts").read_text() == "127.0.0.1 localhost mail\n"
    assert not (q / "etc" / "resolv.conf").exists()                 # no source, no copy
    assert not list((q / "etc").glob("*.pfy-new"))


def test_the_list_is_debians():
    assert set(CHROOT_FILES) >= {"etc/localtime", "etc/services", "etc/resolv.conf",
                                 "etc/hosts", "etc/nsswitch.conf"}
