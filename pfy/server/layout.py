"""The folders an instance needs, with Postfix's owners and modes.

Used by master at start-up and by `postfix check` / `postfix set-permissions`.
Owners and modes follow Postfix's postfix-files:

    queue_directory         root        0755
    queue_directory/pid     root        0755
    queue_directory/public  mail_owner  0711 (Postfix: 0710 group postdrop)
    queue_directory/private mail_owner  0700
    the message queues      mail_owner  0700 (maildrop 3733: see postdrop(1))

pfy differs from Postfix for public/ and maildrop/ because Python cannot run
set-group-ID: the kernel-checked file owner (maildrop) and SO_PEERCRED
(public sockets) take the place of the postdrop group.
    data_directory          mail_owner  0700

When not root, nothing is chowned: the user who runs the instance owns it all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Owners", "resolve_owners", "ensure_layout", "copy_chroot_files", "LayoutError",
           "CHROOT_FILES"]

# What a chrooted daemon may need from /etc, copied into queue_directory/etc
# as Debian's configure-instance.sh does before Postfix starts: the time
# zone, service and host names for native lookups (smtp_host_lookup =
# native, getaddrinfo), the resolver's configuration.
CHROOT_FILES = ("etc/localtime", "etc/services", "etc/resolv.conf", "etc/hosts",
                "etc/nsswitch.conf", "etc/host.conf")


class LayoutError(Exception):
    """A folder that cannot be created or fixed; str() names it."""


@dataclass(frozen=True)
class Owners:
    uid: int        # mail_owner
    gid: int        # mail_owner's group
    setgid_gid: int  # setgid_group


def resolve_owners(cfg) -> Owners | None:
    """mail_owner and setgid_group as ids; None when we are not root.

    Raises LayoutError naming the parameter for an unknown user or group.
    """
    if os.geteuid() != 0:
        return None
    import grp
    import pwd
    main_cf = os.path.join(cfg.config_directory, "main.cf")
    try:
        pw = pwd.getpwnam(cfg.mail_owner)
    except KeyError:
        raise LayoutError(f"file {main_cf}: parameter mail_owner: "
                          f"unknown user name value: {cfg.mail_owner}") from None
    if pw.pw_uid == 0:
        raise LayoutError(f"file {main_cf}: parameter mail_owner: "
                          f"user {cfg.mail_owner} has privileged user ID")
    try:
        gr = grp.getgrnam(cfg.setgid_group)
    except KeyError:
        raise LayoutError(f"file {main_cf}: parameter setgid_group: "
                          f"unknown group name: {cfg.setgid_group}") from None
    return Owners(pw.pw_uid, pw.pw_gid, gr.gr_gid)


def _fix(path: str, mode: int, uid: int | None, gid: int | None,
         changes: list[str]) -> None:
    """Create path, or fix its mode and owner; report fixes of existing ones
    (creating the folders of a fresh instance is not news)."""
    try:
        created = False
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
            created = True
            changes.append(f"created {path}")
        st = os.stat(path)
        # chown before chmod: changing the owner may clear set-ID bits.
        if uid is not None and (st.st_uid != uid or (gid is not None and st.st_gid != gid)):
            os.chown(path, uid, -1 if gid is None else gid)
            if not created:
                changes.append(f"owner {uid}:{gid} {path}")
            st = os.stat(path)
        if st.st_mode & 0o7777 != mode:
            os.chmod(path, mode)
            if not created:
                changes.append(f"mode {oct(mode)[2:]} {path}")
    except OSError as exc:
        raise LayoutError(f"{path}: {exc.strerror}") from None


def ensure_layout(cfg, owners: Owners | None) -> list[str]:
    """Create missing folders and fix owners/modes; return what changed."""
    from pfy.queue.directory import QUEUE_NAMES, DIR_MODES
    changes: list[str] = []
    q = cfg.queue_directory
    root_uid = 0 if owners else None
    mo = owners.uid if owners else None
    mg = owners.gid if owners else None
    _fix(q, 0o755, root_uid, 0 if owners else None, changes)
    _fix(os.path.join(q, "pid"), 0o755, root_uid, 0 if owners else None, changes)
    _fix(os.path.join(q, "public"), 0o711, mo, mg, changes)
    _fix(os.path.join(q, "private"), 0o700, mo, mg, changes)
    for name in QUEUE_NAMES:
        _fix(os.path.join(q, name), DIR_MODES.get(name, 0o700), mo, mg, changes)
    _fix(cfg.data_directory, 0o700, mo, mg, changes)
    return changes


def copy_chroot_files(queue_directory: str, source_root: str = "/") -> list[str]:
    """Copy CHROOT_FILES that exist under source_root into queue_directory
    (root-owned, mode 0644, replaced atomically when they differ); return
    what changed.  Only for an instance run by root with chrooted services:
    an ordinary user's instance never chroots."""
    changes: list[str] = []
    etc = os.path.join(queue_directory, "etc")
    for rel in CHROOT_FILES:
        src = os.path.join(source_root, rel)
        try:
            with open(src, "rb") as f:      # follows /etc/localtime's symlink
                data = f.read()
        except OSError:
            continue
        dst = os.path.join(queue_directory, rel)
        try:
            with open(dst, "rb") as f:
                if f.read() == data:
                    continue
        except OSError:
            pass
        try:
            os.makedirs(etc, mode=0o755, exist_ok=True)
            tmp = dst + ".pfy-new"
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
        except OSError as err:
            raise LayoutError(f"{dst}: {err.strerror}") from None
        changes.append(f"copied {src} to {dst}")
    return changes
