"""postfix - pfy control program.

SYNOPSIS
    postfix [-Dv] [-c config_dir] command

COMMANDS (postfix(1))
    check            warn about bad configuration and permissions; create
                     missing queue folders and data_directory
    start            check, then start master in the background; return once
                     it listens (exit 0) or with the reason it failed (exit 1)
    start-fg         as start, but master stays in the foreground
    stop             stop master and its children; wait up to 5 seconds, then
                     kill what is left
    abort            stop master at once, no waiting
    reload           master re-reads main.cf and master.cf (SIGHUP)
    status           "the Postfix mail system is running: PID: N" (exit 0)
                     or "... is not running" (exit 1)
    set-permissions  fix owners and modes of the queue folders and data_directory
    flush            ask the queue manager to retry all deferred mail
    tls enable-server [-r bits] [-h hostname] [-e]
                     make a self-signed key and certificate for smtpd when
                     main.cf names none, and turn on opportunistic TLS
                     (smtpd_tls_security_level = may); -e makes ECDSA
    tls new-server-key [-r bits] [-h hostname] [-e]
                     make a new key and self-signed certificate, print the
                     postconf command that deploys them

Messages are Postfix's postfix-script ones, with its "postfix/postfix-script:"
tag, on stderr and in the log, so scripts that grep them keep working.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["main"]

TAG = "postfix/postfix-script"
STOP_WAIT = 5       # postfix-script stop: "for i in 5 4 3 2 1", then kill -9
USAGE = "usage: postfix [-c config_dir] [-Dv] command"
COMMANDS = ("check", "start", "start-fg", "stop", "abort", "reload", "status",
            "set-permissions", "flush", "tls")


class _Fail(Exception):
    """A fatal error: one line, exit 1."""

    def __init__(self, msg: str, tag: str = "postfix"):
        super().__init__(msg)
        self.tag = tag


def _script_fail(msg: str) -> _Fail:
    # postfix-script's own fatal lines carry its tag, as Postfix's do.
    return _Fail(msg, TAG)


def _say(msg: str, severity: str = "info") -> None:
    prefix = "" if severity == "info" else f"{severity}: "
    sys.stderr.write(f"{TAG}: {prefix}{msg}\n")
    sys.stderr.flush()
    try:
        from pfy.log import logger
        if logger.process_name == "postfix-script":
            logger.log(severity, msg)
    except Exception:   # noqa: BLE001 - stderr already has it
        pass


def _parse(argv: list[str]) -> tuple[str | None, int, str, list[str]]:
    config_dir, verbose, i = None, 0, 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        arg = argv[i]
        j = 1
        while j < len(arg):
            ch = arg[j]
            if ch == "c":
                value = arg[j + 1:]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise _Fail(f"option requires an argument -- 'c'\n{USAGE}")
                    value = argv[i]
                config_dir = value
                break
            if ch == "v":
                verbose += 1
            elif ch == "D":
                pass
            else:
                raise _Fail(f"invalid option -- '{ch}'\n{USAGE}")
            j += 1
        i += 1
    if i >= len(argv):
        raise _Fail(f"{USAGE}")
    command, rest = argv[i], argv[i + 1:]
    if command not in COMMANDS:
        raise _Fail(f"unknown command: '{command}'\n{USAGE}")
    return config_dir, verbose, command, rest


def _load(config_dir: str, verbose: int):
    from pfy.config import ConfigError
    from pfy.daemons.master import load
    from pfy.daemons.master.endpoints import EndpointError
    try:
        return load(config_dir, verbose)
    except (ConfigError, EndpointError) as exc:
        raise _Fail(str(exc)) from None


def _init_log(cfg, verbose: int) -> None:
    from pfy.log import init_logging
    init_logging(cfg, "postfix-script", verbose=verbose)


# Postfix daemons that pfy does without, named in Debian's stock master.cf
# (or its commented examples): what `postfix check` says of a line naming
# one.  Nothing in pfy connects to the first five, so their lines are inert.
NOT_SHIPPED = {
    "tlsmgr": "TLS session caches live in each smtpd and smtp process; the line does nothing",
    "scache": "smtp keeps its own connection cache (smtp_connection_cache_*); "
              "the line does nothing",
    "flush": "ETRN and sendmail -qR ask qmgr to scan the deferred queue; the line does nothing",
    "proxymap": "proxy:type:name tables are opened by each process before its jail; "
                "the line does nothing",
    "postscreen": "clients of this service get no SMTP server: run smtpd on it instead",
    "dnsblog": "only postscreen uses it", "tlsproxy": "only postscreen uses it",
    "qmqpd": "no QMQP server: clients of this service get no answer",
    "oqmgr": "use qmgr",
}


def _check(cfg, specs) -> None:
    """postfix check: configuration, mail_owner, folders (created, fixed)."""
    from pfy.server.layout import LayoutError, copy_chroot_files, ensure_layout, resolve_owners
    try:
        owners = resolve_owners(cfg)
        changes = ensure_layout(cfg, owners)
        if owners is not None and any(spec.chroot for spec in specs):
            # Quietly, as Debian's configure-instance.sh: a changed
            # /etc/hosts is no fault of the instance.
            copy_chroot_files(cfg.queue_directory)
    except LayoutError as exc:
        raise _Fail(str(exc)) from None
    for change in changes:
        if change.startswith("created"):
            continue        # a fresh instance: nothing to warn about
        _say(f"fixed: {change}", "warning")
    for spec in specs:
        if not os.path.exists(spec.path):
            why = NOT_SHIPPED.get(os.path.basename(spec.path))
            what = (f"pfy has no {os.path.basename(spec.path)}: {why}" if why
                    else f"command not found: {spec.path}")
            _say(f"{spec.file}, line {spec.line}: service {spec.name}/{spec.type}: {what}",
                 "warning")


def _master_argv(cfg, config_dir: str, *flags: str) -> list[str]:
    from pfy.server.paths import daemon_argv
    path = os.path.join(cfg.daemon_directory, "master")
    if not os.path.exists(path):
        raise _Fail(f"{path}: No such file or directory (daemon_directory = {cfg.daemon_directory})")
    _, prefix = daemon_argv(path)
    return prefix + ["-c", config_dir, *flags]


def _running(cfg) -> int | None:
    from pfy.daemons.master import running_pid
    return running_pid(cfg)


def _pid(cfg) -> int:
    from pfy.daemons.master import pid_path
    try:
        with open(pid_path(cfg)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        pid = _running(cfg)
        if pid and pid > 0:
            return pid
        raise _Fail(f"cannot read {pid_path(cfg)}") from None


def run(argv: list[str]) -> int:
    from pfy.config import config_directory
    config_dir, verbose, command, rest = _parse(argv)
    config_dir = os.path.abspath(config_directory(config_dir))
    if not os.path.isdir(config_dir):
        raise _Fail(f"{config_dir}: No such file or directory (config_directory)")
    os.environ["MAIL_CONFIG"] = config_dir
    cfg, specs = _load(config_dir, verbose)
    _init_log(cfg, verbose)
    import signal

    if command == "check":
        _check(cfg, specs)
        return 0
    if command == "tls":
        return _tls(cfg, config_dir, rest)
    if command == "set-permissions":
        _check(cfg, specs)
        return 0
    if command == "status":
        pid = _running(cfg)
        if pid is None:
            _say("the Postfix mail system is not running")
            return 1
        _say(f"the Postfix mail system is running: PID: {_pid(cfg)}")
        return 0
    if command in ("start", "start-fg"):
        if _running(cfg) is not None:
            raise _script_fail("the Postfix mail system is already running")
        _check(cfg, specs)
        _say("starting the Postfix mail system")
        if command == "start-fg":
            flag = "-i" if os.getpid() == 1 else "-s"
            argv_m = _master_argv(cfg, config_dir, flag, *(["-v"] * verbose))
            sys.stdout.flush()
            os.execv(argv_m[0], argv_m)
        import subprocess
        argv_m = _master_argv(cfg, config_dir, "-w", *(["-v"] * verbose))
        rc = subprocess.call(argv_m)
        if rc != 0:
            raise _script_fail("mail system startup failed")
        return 0
    pid = _running(cfg)
    if command == "flush":
        if pid is None:
            raise _script_fail("the Postfix mail system is not running")
        from pfy.ipc.trigger import trigger
        # qmgr trigger requests (qmgr.h): F = flush dead destinations,
        # A = scan all queues (deferred included): postqueue -f's effect.
        if not trigger(os.path.join(cfg.queue_directory, "public", "qmgr"), b"FA"):
            raise _Fail("cannot flush mail queue - mail system is down")
        return 0
    if pid is None:
        raise _script_fail("the Postfix mail system is not running")
    pid = _pid(cfg)
    if command == "reload":
        _say("refreshing the Postfix mail system")
        os.kill(pid, signal.SIGHUP)
        return 0
    if command == "abort":
        _say("aborting the Postfix mail system")
        os.kill(pid, signal.SIGTERM)
        return 0
    # stop
    _say("stopping the Postfix mail system")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    next_note = time.monotonic() + 1
    while time.monotonic() < deadline:
        if _running(cfg) is None:
            return 0
        if time.monotonic() >= next_note:
            _say("waiting for the Postfix mail system to terminate")
            next_note += 1
        time.sleep(0.05)
    _say("stopping the Postfix mail system with force", "warning")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return 0


def _tls(cfg, config_dir: str, args: list[str]) -> int:
    """postfix tls (Postfix's postfix-tls(1) subset for servers)."""
    usage = "usage: postfix tls enable-server|new-server-key [-r bits] [-h hostname] [-e]"
    if not args or args[0] not in ("enable-server", "new-server-key"):
        raise _Fail(usage)
    sub, opts = args[0], args[1:]
    bits, hostname, key_type = 2048, cfg.myhostname, "rsa"
    i = 0
    while i < len(opts):
        if opts[i] in ("-r", "-h") and i + 1 < len(opts):
            if opts[i] == "-r":
                if not opts[i + 1].isdigit() or int(opts[i + 1]) < 2048:
                    raise _Fail(f"invalid RSA key size: {opts[i + 1]} (at least 2048)")
                bits = int(opts[i + 1])
            else:
                hostname = opts[i + 1]
            i += 2
        elif opts[i] == "-e":
            key_type, i = "ecdsa", i + 1
        else:
            raise _Fail(usage)
    if sub == "enable-server" and (cfg.smtpd_tls_cert_file or cfg.smtpd_tls_chain_files):
        _say("TLS is already configured for the server (smtpd_tls_cert_file or "
             "smtpd_tls_chain_files is set)")
        return 0
    from pfy.tls.certs import new_server_cert
    key_path, cert_path = new_server_cert(config_dir, hostname, key_type=key_type, bits=bits)
    settings = [f"smtpd_tls_key_file = {key_path}", f"smtpd_tls_cert_file = {cert_path}"]
    if sub == "new-server-key":
        _say(f"new {key_type.upper()} key and self-signed certificate for {hostname}: "
             f"{key_path} {cert_path}")
        print("deploy them with: postconf -c %s -e '%s' '%s'" % (config_dir, *settings))
        return 0
    if cfg.smtpd_tls_security_level in ("", "none"):
        settings.append("smtpd_tls_security_level = may")
    from pfy.cli import postconf
    postconf._run(["-c", config_dir, "-e", *[x.replace(" = ", "=", 1) for x in settings]])
    _say(f"enabled TLS for the server with a self-signed certificate for {hostname}")
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(sys.argv[1:] if argv is None else argv)
    except _Fail as exc:
        text = str(exc)
        first, _, more = text.partition("\n")
        if first.startswith("usage"):
            sys.stderr.write(first + "\n")
        else:
            sys.stderr.write(f"{exc.tag}: fatal: {first}\n")
            if exc.tag == TAG:
                try:
                    from pfy.log import logger
                    if logger.process_name == "postfix-script":
                        logger.log("fatal", first)
                except Exception:   # noqa: BLE001 - stderr already has it
                    pass
        if more:
            sys.stderr.write(more + "\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)
