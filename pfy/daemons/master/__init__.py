"""master - the pfy master process.

SYNOPSIS
    master [-distvw] [-c config_dir] [-e exit_time]

DESCRIPTION
    Reads master.cf, opens every listening endpoint (inet, unix, unix-dgram,
    fifo, pass), starts daemons on demand up to each service's maxproc, sends
    wake-ups, restarts crashed daemons (throttling a service whose process
    dies before serving anyone for service_throttle_time), and re-reads
    main.cf and master.cf on SIGHUP. See master(8).

    -c dir   configuration directory (also for every daemon: MAIL_CONFIG)
    -d       stay in the foreground, keep stdio (debugging)
    -i       init mode (PID 1), foreground; as -s
    -s       foreground, stdout kept (maillog_file = /dev/stdout works)
    -e secs  exit after secs seconds (tests)
    -t       test mode: exit 0 when no master runs on this instance, else 1
    -v       verbose, passed on to every daemon
    -w       wait: return only once the background master is ready (its
             listeners open), exit 1 with the reason otherwise

SECURITY
    Started by root, master stays root (it must open privileged ports, start
    local delivery as root, chroot the others); daemons drop to mail_owner.
    Started by an ordinary user, everything runs as that user, no chroot.
    master never reads data from the network; it only accepts status records
    from its own children and ignores anything malformed.

FILES
    $data_directory/master.lock   exclusive lock (one master per instance)
    $queue_directory/pid/master.pid
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


class _Usage(Exception):
    pass


def _parse(argv: list[str]) -> dict:
    opts = {"config_dir": None, "foreground": False, "keep_stdout": False,
            "exit_time": 0.0, "test": False, "verbose": 0, "wait": False, "debug": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or len(arg) < 2:
            raise _Usage(f"unexpected argument: {arg}")
        j = 1
        while j < len(arg):
            ch = arg[j]
            if ch in "ce":
                value = arg[j + 1:]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise _Usage(f"option requires an argument -- '{ch}'")
                    value = argv[i]
                if ch == "c":
                    opts["config_dir"] = value
                else:
                    try:
                        opts["exit_time"] = float(value)
                    except ValueError:
                        raise _Usage(f"bad -e exit_time: {value}") from None
                break
            if ch == "d":
                opts["foreground"] = opts["debug"] = True
            elif ch in "is":
                opts["foreground"] = opts["keep_stdout"] = True
            elif ch == "t":
                opts["test"] = True
            elif ch == "v":
                opts["verbose"] += 1
            elif ch == "w":
                opts["wait"] = True
            elif ch == "D":
                pass        # Postfix runs debugger_command; we do not
            else:
                raise _Usage(f"invalid option -- '{ch}'")
            j += 1
        i += 1
    return opts


def _err(msg: str) -> None:
    sys.stderr.write(f"master: fatal: {msg}\n")


def load(config_dir: str, verbose: int = 0):
    """(cfg, specs): main.cf and master.cf, resolved; ConfigError/EndpointError."""
    from pfy.config import load_config
    from pfy.config.master_cf import parse_master_cf
    from pfy.daemons.master.supervisor import build_specs
    from pfy.server.paths import shipped_file
    cfg = load_config(config_dir)
    path = os.path.join(config_dir, "master.cf")
    if not os.path.exists(path):
        path = shipped_file("master.cf")
    if not os.path.exists(path):
        from pfy.config import ConfigError
        raise ConfigError(f"open {os.path.join(config_dir, 'master.cf')}: No such file or directory")
    return cfg, build_specs(parse_master_cf(path), cfg, verbose)


def lock_path(cfg) -> str:
    return os.path.join(cfg.data_directory, "master.lock")


def pid_path(cfg) -> str:
    return os.path.join(cfg.queue_directory, cfg.process_id_directory, "master.pid")


def running_pid(cfg) -> int | None:
    """The pid of the master holding this instance's lock, or None."""
    import fcntl
    try:
        fd = os.open(lock_path(cfg), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pass        # locked: someone runs
        else:
            return None
        data = os.read(fd, 64).decode("ascii", "replace").strip()
        return int(data) if data.isdigit() else -1
    finally:
        os.close(fd)


def _take_lock(cfg) -> int:
    """Exclusive lock on master.lock, holding our pid (master.c)."""
    import fcntl
    path = lock_path(cfg)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise RuntimeError(f"open lock file {path}: unable to set exclusive lock: "
                           f"{exc.strerror}") from None
    os.ftruncate(fd, 0)
    os.write(fd, b"%*d\n" % (10, os.getpid()))
    return fd


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = _parse(argv)
    except _Usage as exc:
        _err(f"{exc}; usage: master [-distvw] [-c config_dir] [-e exit_time]")
        sys.exit(1)
    from pfy.config import ConfigError, config_directory
    from pfy.daemons.master.endpoints import EndpointError
    config_dir = os.path.abspath(config_directory(opts["config_dir"]))
    try:
        cfg, specs = load(config_dir, opts["verbose"])
    except (ConfigError, EndpointError) as exc:
        _err(str(exc))
        sys.exit(1)
    if opts["test"]:
        sys.exit(0 if running_pid(cfg) is None else 1)
    if opts["wait"] and not opts["foreground"]:
        _wait_for_background(cfg, config_dir, specs, opts)
    _run(cfg, config_dir, specs, opts, ready_fd=None)


def _wait_for_background(cfg, config_dir, specs, opts) -> None:
    """-w: fork the real master; report its start-up result, then exit."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _run(cfg, config_dir, specs, opts, ready_fd=w)
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 4096)
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    if text.startswith("ok"):
        sys.exit(0)
    sys.stderr.write(text if text else "master: fatal: daemon initialization failure\n")
    sys.exit(1)


def _run(cfg, config_dir, specs, opts, ready_fd) -> None:
    """Become the master (daemonized unless foreground) and serve."""
    if not opts["foreground"]:
        import daemon
        preserve = [ready_fd] if ready_fd is not None else []
        ctx = daemon.DaemonContext(files_preserve=preserve, umask=0o022,
                                   working_directory="/", detach_process=True,
                                   prevent_core=False)
        ctx.open()
    if ready_fd is not None:
        os.set_inheritable(ready_fd, False)

    def fail(msg: str) -> None:
        from pfy.log import logger
        logger.log("fatal", msg)
        if ready_fd is not None:
            try:
                os.write(ready_fd, f"master: fatal: {msg}\n".encode())
            except OSError:
                pass
        os._exit(1)

    from pfy.log import init_logging, logger
    init_logging(cfg, "master", verbose=opts["verbose"], stderr=opts["foreground"] and opts["debug"])
    from pfy.daemons.master.endpoints import EndpointError
    from pfy.daemons.master.supervisor import Supervisor
    from pfy.server.layout import LayoutError, ensure_layout, resolve_owners
    try:
        owners = resolve_owners(cfg)
        ensure_layout(cfg, owners)
    except LayoutError as exc:
        fail(str(exc))
    try:
        lock_fd = _take_lock(cfg)
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    os.chdir(cfg.queue_directory)
    sup = Supervisor(cfg, specs, logger, config_dir=config_dir,
                     loader=lambda: load(config_dir, opts["verbose"]),
                     exit_time=opts["exit_time"])
    try:
        sup.install_signals()
        sup.open_all()
    except (EndpointError, OSError) as exc:
        fail(str(exc))
    try:
        with open(pid_path(cfg) + ".tmp", "w") as f:
            f.write("%*d\n" % (10, os.getpid()))
        os.replace(pid_path(cfg) + ".tmp", pid_path(cfg))
    except OSError as exc:
        fail(f"write {pid_path(cfg)}: {exc.strerror}")
    import pfy
    logger.info(f"daemon started -- version {pfy.__version__}, configuration {config_dir}")
    if os.geteuid() != 0:
        import pwd
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = str(os.geteuid())
        logger.info(f"not running as root: all daemons run as user {user} "
                    f"(uid {os.geteuid()}), without chroot")
    if ready_fd is not None:
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
    code = sup.run()
    try:
        os.unlink(pid_path(cfg))
    except OSError:
        pass
    os.close(lock_fd)
    sys.exit(code)
