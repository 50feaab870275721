"""postqueue - queue control for everyone (postqueue(1)).

    postqueue [-v] [-c config_dir] -f | -i queue_id | -j | -p | -s site

-p lists the queue in sendmail's mailq layout and -j as JSON, both from
the showq service (public/showq).  When the mail system is down, the
super-user (and, for an instance run by an ordinary user, that user: the
owner of queue_directory, who can read it anyway) gets the listing from
showq run stand-alone, with Postfix's warning; anyone else gets "Queue
report unavailable - mail system is down" (exit 69).

-f asks qmgr (public/qmgr FIFO) to forget dead destinations and scan all
of the deferred and incoming queues, and wakes pickup, as Postfix's
mail_flush_deferred() + mail_flush_maildrop().

-i ID and -s SITE are the flush(8) service's send_file and send_site.
pfy has no flush daemon: postqueue asks qmgr through its FIFO
(public/qmgr, the "{id ID}" and "{site SITE}" frames of pfy.ipc.trigger),
and qmgr moves the deferred files concerned to incoming/, so any user on
authorized_flush_users may flush without write access to the queue.  -s
is refused, as Postfix's flush service refuses it, for a site not in
fast_flush_domains.  Both say "mail system is down" when nobody listens
on public/qmgr.
"""

from __future__ import annotations

import getopt
import os
import sys

from pfy.cli import _common

__all__ = ["main", "run", "show_queue"]

USAGE = ("usage: postqueue -f | postqueue -i queueid | postqueue -j "
         "| postqueue -p | postqueue -s site")
# sysexits.h
EX_USAGE, EX_SOFTWARE, EX_UNAVAILABLE, EX_NOPERM, EX_IOERR = 64, 70, 69, 77, 74


class _Fatal(Exception):
    def __init__(self, msg: str, status: int):
        super().__init__(msg)
        self.status = status


def _may_access_queue(cfg) -> bool:
    """Root, or the instance's owner (queue_directory's owner)."""
    if os.geteuid() == 0:
        return True
    try:
        return os.stat(cfg.queue_directory).st_uid == os.geteuid()
    except OSError:
        return False


def _user_allowed(cfg, acl_param: str) -> str | None:
    """None when allowed, else the user name (Postfix check_user_acl_byuid).
    root and mail_owner always pass; the list holds user names and
    type:table lookups, "static:anyone" by default."""
    uid = os.getuid()
    if uid == 0 or _may_access_queue(cfg):
        return None
    import pwd
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "unknown"
    if name == cfg.mail_owner:
        return None
    from pfy.message.domains import MatchList
    from pfy.tables import open_table
    acl = cfg[acl_param]
    if not acl or acl == ["static:anyone"]:
        return None if acl else name
    return None if MatchList(acl, lambda s: open_table(s, cfg)).match(name) else name


# -- listing -------------------------------------------------------------------

def _connect_showq(cfg):
    from pfy.ipc.channel import AttrConnection
    from pfy.ipc.showq_client import PROTOCOL
    path = os.path.join(cfg.queue_directory, "public", cfg.showq_service_name)
    return AttrConnection.connect(path, PROTOCOL, timeout=3600)


def _standalone_showq(cfg, verbose: int):
    """Run the showq program stand-alone on a socketpair (Postfix's
    mail_run_foreground(var_daemon_dir, "showq -u -S"))."""
    import socket
    import subprocess
    from pfy.ipc.attr import FRAME_GREETING, ProtocolError
    from pfy.ipc.channel import AttrConnection
    from pfy.ipc.showq_client import PROTOCOL
    from pfy.server.paths import daemon_argv
    daemon = os.path.join(cfg.daemon_directory, cfg.showq_service_name)
    exe, argv = daemon_argv(daemon)
    ours, theirs = socket.socketpair()
    env = dict(os.environ, MAIL_CONFIG=cfg.config_directory)
    # -u: as mail_owner, as Postfix's; but a queue that root itself owns
    # (a root-run test folder never set up by "postfix check") stays
    # readable only to root.
    try:
        owner = os.stat(cfg.queue_directory).st_uid
    except OSError:
        owner = 0
    unpriv = ["-u"] if owner != 0 else []
    try:
        proc = subprocess.Popen(argv + unpriv + ["-S"] + ["-v"] * verbose,
                                executable=exe, stdin=theirs,
                                stdout=subprocess.DEVNULL, env=env)
    except OSError as err:
        raise _Fatal(f"{daemon}: {err.strerror}", EX_UNAVAILABLE)
    finally:
        theirs.close()
    conn = AttrConnection(ours)
    try:
        frame = conn.receive_frame()
    except (EOFError, ProtocolError, OSError):
        proc.wait()
        raise _Fatal("malformed showq server response", EX_SOFTWARE)
    if frame.kind != FRAME_GREETING or frame.body != PROTOCOL.encode():
        raise _Fatal("malformed showq server response", EX_SOFTWARE)
    return conn, proc


def show_queue(cfg, fmt: str = "compat", verbose: int = 0, out=None) -> int:
    """List the queue on ``out`` (stdout): fmt "compat" (mailq) or "json".
    Raises _Fatal with Postfix's message and status."""
    from pfy.ipc.attr import ProtocolError
    from pfy.ipc.showq_client import (ShowqFormatError, format_compat,
                                      format_json, read_events)
    out = out or sys.stdout
    proc = None
    who = _user_allowed(cfg, "authorized_mailq_users")
    if who is not None:
        raise _Fatal(f"User {who}({os.getuid()}) is not allowed to view the mail queue",
                     EX_NOPERM)
    try:
        conn = _connect_showq(cfg)
    except (OSError, ProtocolError, EOFError) as err:
        why = (f"Connect to the {cfg.mail_name} {cfg.showq_service_name} service: "
               f"{getattr(err, 'strerror', None) or err}")
        if not _may_access_queue(cfg):
            raise _Fatal(f"Queue report unavailable - mail system is down ({why})",
                         EX_UNAVAILABLE)
        _common.warning(f"Mail system is down -- accessing queue directly ({why})")
        conn, proc = _standalone_showq(cfg, verbose)
    try:
        events = read_events(conn)
        if fmt == "json":
            format_json(events, out.write)
        else:
            format_compat(events, out.write, long_ids=cfg.enable_long_queue_ids)
        out.flush()
    except (ProtocolError, ShowqFormatError, EOFError):
        raise _Fatal("malformed showq server response", EX_SOFTWARE)
    finally:
        conn.close()
        if proc is not None:
            proc.wait()
    return 0


# -- flushing -------------------------------------------------------------------

def _trigger(cfg, service: str, request: bytes) -> bool:
    from pfy.ipc.trigger import trigger
    return trigger(os.path.join(cfg.queue_directory, "public", service), request)


def flush_queue(cfg) -> int:
    who = _user_allowed(cfg, "authorized_flush_users")
    if who is not None:
        raise _Fatal(f"User {who}({os.getuid()}) is not allowed to flush the mail queue",
                     EX_NOPERM)
    # mail_flush_deferred(): dead hosts, all time stamps, deferred, incoming.
    if not _trigger(cfg, cfg.queue_service_name, b"FADI"):
        raise _Fatal("Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)
    if not _trigger(cfg, cfg.pickup_service_name, b"W"):
        raise _Fatal("Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)
    return 0


def flush_file(cfg, queue_id: str) -> int:
    """postqueue -i: flush(8)'s send_file, asked of qmgr over public/qmgr
    ("{id QUEUE_ID}", pfy.ipc.trigger.qmgr_flush_id): qmgr owns the queue,
    so a user who may not write it can still flush."""
    from pfy.ipc.trigger import qmgr_flush_id
    from pfy.queue import is_queue_id
    who = _user_allowed(cfg, "authorized_flush_users")
    if who is not None:
        raise _Fatal(f"User {who}({os.getuid()}) is not allowed to flush the mail queue",
                     EX_NOPERM)
    if not is_queue_id(queue_id):
        raise _Fatal(f'Cannot flush queue ID - invalid name: "{queue_id[:100]}'
                     f'{"..." if len(queue_id) > 100 else ""}"', EX_USAGE)
    if not _trigger(cfg, cfg.queue_service_name, qmgr_flush_id(queue_id)):
        raise _Fatal("Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)
    return 0


def _valid_site(site: str) -> bool:
    """valid_hostname() or valid_mailhost_literal(), as postqueue.c."""
    import ipaddress
    import re
    if site.startswith("["):
        if not site.endswith("]"):
            return False
        inner = site[1:-1]
        if inner.lower().startswith("ipv6:"):
            inner = inner[5:]
        try:
            ipaddress.ip_address(inner)
            return True
        except ValueError:
            return False
    if len(site) > 255 or not site:
        return False
    label = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
    parts = site.split(".")
    return all(label.match(p) for p in parts) and not parts[-1].isdigit()


def flush_site(cfg, site: str) -> int:
    who = _user_allowed(cfg, "authorized_flush_users")
    if who is not None:
        raise _Fatal(f"User {who}({os.getuid()}) is not allowed to flush the mail queue",
                     EX_NOPERM)
    from pfy.message.domains import MatchList
    from pfy.tables import open_table
    domains = MatchList(cfg.fast_flush_domains, lambda s: open_table(s, cfg),
                        domain=True, parent="fast_flush_domains"
                        in cfg.parent_domain_matches_subdomains)
    name = site.lower()
    eligible = domains.match(name.strip("[]") if name.startswith("[") else name)
    if not eligible:
        raise _Fatal(f'Flush service is not configured for destination "{site}"',
                     EX_UNAVAILABLE)
    # flush(8)'s send_site, asked of qmgr ("{site DOMAIN}"): it moves the
    # deferred mail with a recipient at SITE to incoming/ and forgets that
    # the destination was dead.
    from pfy.ipc.trigger import qmgr_flush_site
    if not _trigger(cfg, cfg.queue_service_name, qmgr_flush_site(site)):
        raise _Fatal("Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)
    return 0


# -- command line ----------------------------------------------------------------

def run(argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, "c:fi:jps:v")
    except getopt.GetoptError:
        _common.fatal(USAGE, EX_USAGE)
    if args:
        _common.fatal(USAGE, EX_USAGE)
    config_opt = None
    mode = None
    value = ""
    verbose = 0
    for opt, val in opts:
        if opt == "-c":
            config_opt = val
        elif opt == "-v":
            verbose += 1
        else:
            if mode is not None:
                _common.fatal(USAGE, EX_USAGE)
            mode, value = opt, val
    if mode is None:
        _common.fatal(USAGE, EX_USAGE)

    from pfy.config import load_config
    cfg = load_config(_common.config_dir_from(config_opt))
    if not os.path.isdir(cfg.queue_directory):        # postqueue.c chdir()
        _common.fatal(f"chdir {cfg.queue_directory}: No such file or directory",
                      EX_UNAVAILABLE)
    if mode == "-s" and not _valid_site(value):
        _common.fatal(f'Cannot flush mail queue - invalid destination: "{value[:100]}'
                      f'{"..." if len(value) > 100 else ""}"', EX_USAGE)
    try:
        if mode == "-p":
            return show_queue(cfg, "compat", verbose)
        if mode == "-j":
            return show_queue(cfg, "json", verbose)
        if mode == "-f":
            return flush_queue(cfg)
        if mode == "-i":
            return flush_file(cfg, value)
        return flush_site(cfg, value)
    except _Fatal as err:
        _common.fatal(str(err), err.status)


def main() -> None:
    _common.set_program_name("postqueue")
    _common.run_main(run, sys.argv[1:])


if __name__ == "__main__":
    main()
