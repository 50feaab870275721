"""What every daemon does between exec and its first client, and at the end.

The three skeletons (single, multi, trigger) share this lifecycle:

1. options from master: the argv master builds from master.cf, Postfix's
   (`qmgr -l -t unix -u`, `smtpd -n smtp -t inet -u -c -o name=value -s 2`),
   shown unchanged by ps; what follows the options is the service's own
   (pipe's `flags=R user=x argv=/bin/cmd ...`), refused by a daemon that
   takes none;
2. main.cf with the service's -o overrides;
3. logging, then the daemon's pre_jail hook (open tables, TLS contexts...),
   then everything else the jail will hide (codecs, time zone, user data);
4. chroot to queue_directory (-c) and the switch to mail_owner (-u) with
   supplementary groups cleared, only when started by root;
5. the daemon's post_jail hook, then the serve loop (an asyncio loop for all
   three skeletons) with busy/idle reports to master, max_idle, max_use, the
   daemon_timeout watchdog, and exit when master goes away.

Errors: `Fatal` (or a ConfigError) is logged as `fatal: ...` and exits 1; any
other exception escaping a handler is a panic: its traceback goes to the log
and the process exits 2, so master restarts it and throttles a service that
dies before serving anyone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from pfy.server import master_proto

__all__ = ["Fatal", "ServerOptions", "ServerContext", "UsageError",
           "parse_server_args", "Lifecycle", "EXIT_FATAL", "EXIT_PANIC"]

EXIT_FATAL = 1      # msg_fatal() exit status
EXIT_PANIC = 2      # ours; Postfix's msg_panic() aborts instead


class Fatal(Exception):
    """A configuration or environment error: logged as fatal, exit 1."""


class UsageError(Exception):
    """Bad daemon command line (master.cf args)."""


@dataclass
class ServerOptions:
    program: str                    # command name: smtpd, qmgr, trivial-rewrite
    service: str                    # master.cf service name (-n), else program
    transport: str = "unix"         # -t inet|unix|unix-dgram|fifo|pass
    solitary: bool = False          # -l: master.cf maxproc is 1
    unprivileged: bool = False      # -u: switch to mail_owner
    chroot: bool = False            # -c: chroot to queue_directory
    verbose: int = 0                # -v, repeatable
    debug: bool = False             # -d: not under master (accepted, as Postfix)
    standalone: bool = False        # -S: serve stdin/stdout, no master
    listen_count: int = 1           # -s N: listening fds 6 .. 6+N-1
    overrides: dict[str, str] = field(default_factory=dict)   # -o name=value
    argv: list[str] = field(default_factory=list)             # for the proc title
    # What follows the options, unchanged (Postfix's skeletons hand the
    # service argv + optind): pipe's "flags=R user=x argv=/bin/cmd -f ${sender}".
    service_args: list[str] = field(default_factory=list)


def parse_server_args(argv: list[str], program: str, *,
                      service_args: bool = False) -> ServerOptions:
    """Parse the options master passes (see master_proto and master(5)).

    Like Postfix's getopt loop (sys_defs.h GETOPT: "+", so no reordering):
    options may repeat, `-o name=value` may also be `-oname=value`, an
    unknown option is a usage error naming it.  Options end at the first
    word that is not one ("-" included) or after a "--", which is dropped;
    the rest goes unchanged to opts.service_args, even words that look like
    options (`argv=/bin/cmd -f ${sender}`).  Without `service_args`, a
    daemon that takes none, any such word is a usage error, as Postfix's
    daemons check argv[0] of what their skeleton hands them.
    """
    opts = ServerOptions(program=program, service=program, argv=[program, *argv])
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        flag, rest = arg[1:2], arg[2:]
        if flag in "notsi" and flag != "":
            if rest:
                value = rest
            else:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"option requires an argument -- '{flag}'")
                value = argv[i]
            if flag == "n":
                opts.service = value
            elif flag == "t":
                if value not in ("inet", "unix", "unix-dgram", "fifo", "pass"):
                    raise UsageError(f"unknown service type: {value}")
                opts.transport = value
            elif flag == "s":
                if not value.isdigit() or int(value) < 1:
                    raise UsageError(f"invalid -s (listen fd count) value: {value}")
                opts.listen_count = int(value)
            elif flag == "o":
                name, eq, val = value.partition("=")
                if not eq or not name.strip():
                    raise UsageError(f"bad -o parameter setting: {value}")
                opts.overrides[name.strip()] = val.strip()
            else:  # -i: Postfix's "ignored", kept for compatibility
                pass
        else:
            for ch in arg[1:]:
                if ch == "l":
                    opts.solitary = True
                elif ch == "u":
                    opts.unprivileged = True
                elif ch == "c":
                    opts.chroot = True
                elif ch == "v":
                    opts.verbose += 1
                elif ch == "d":
                    opts.debug = True
                elif ch == "S":
                    opts.standalone = True
                elif ch == "z":     # Postfix: "dummy -z" ps marker; ignored
                    pass
                else:
                    raise UsageError(f"invalid option -- '{ch}'")
        i += 1
    opts.service_args = argv[i:]
    if opts.service_args and not service_args:
        raise UsageError(f"unexpected command-line argument: {opts.service_args[0]}")
    return opts


class _Timer:
    """A cancellable one-shot timer (see ServerContext.call_later)."""

    def __init__(self, handle: asyncio.TimerHandle):
        self._handle = handle

    def cancel(self) -> None:
        self._handle.cancel()


@dataclass
class ServerContext:
    """What a handler gets: the loaded Config and the service it runs for."""

    cfg: Any                        # pfy.config Config, with -o overrides
    options: ServerOptions
    generation: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    use_count: int = 0              # clients (or triggers) served so far
    stopping: bool = False          # master went away or max_use reached
    data: dict[str, Any] = field(default_factory=dict)   # the daemon's own state
    _at_exit: list[Callable[[], None]] = field(default_factory=list)
    _master_gone: bool = False

    @property
    def service(self) -> str:
        return self.options.service

    @property
    def program(self) -> str:
        return self.options.program

    @property
    def queue_directory(self) -> str:
        """The queue folder as this process sees it: "/" once chrooted into it."""
        return "/" if self.data.get("_chrooted") else self.cfg.queue_directory

    @property
    def chrooted(self) -> bool:
        return bool(self.data.get("_chrooted"))

    def call_later(self, seconds: float, callback: Callable[[], Any]) -> _Timer:
        """Run callback (plain function or coroutine function) after `seconds`.

        Runs on the serve loop, between clients for single/trigger servers.
        Exceptions it raises are panics, like a handler's.
        """
        def fire() -> None:
            try:
                result = callback()
                if asyncio.iscoroutine(result):
                    task = self.loop.create_task(_guard(self, result))
                    _TASKS.add(task)        # the loop holds tasks weakly
                    task.add_done_callback(_TASKS.discard)
            except BaseException as exc:   # noqa: BLE001 - the panic path
                _die(self, exc)
        return _Timer(self.loop.call_later(seconds, fire))

    def master_gone(self) -> bool:
        """True once master has exited (or reloaded this service): the
        status channel reads end-of-file.  For handlers that work through a
        list (pickup between maildrop files): stop between units of work,
        so that an orphan (master killed with -9) does not race the new
        master's processes.  One poll(2) when master is there."""
        if self._master_gone:
            return True
        if self.options.standalone:
            return False
        try:
            readable = _poll_status.poll(0)
        except OSError:
            readable = True
        if readable:
            try:
                # master never writes on the channel: readable means EOF,
                # or a broken channel; either way nobody supervises us.
                data = os.read(master_proto.STATUS_FD, 64)
            except BlockingIOError:
                return False
            except OSError:
                data = b""
            if not data:
                self._master_gone = True
        return self._master_gone

    def at_exit(self, callback: Callable[[], None]) -> None:
        """Call `callback` on any exit: normal, SIGTERM, fatal or panic
        (e.g. cleanup removing its half-written queue file)."""
        self._at_exit.append(callback)

    def run_at_exit(self) -> None:
        callbacks, self._at_exit = self._at_exit, []
        for cb in reversed(callbacks):
            try:
                cb()
            except Exception:   # noqa: BLE001 - exiting anyway; say why
                _log().warning("exit handler failed: %s", traceback.format_exc().splitlines()[-1])


_TASKS: set = set()


class _StatusPoll:
    """poll(2) on the status fd, registered once (select.poll is a set-up
    cost per call otherwise)."""

    def __init__(self) -> None:
        self._poll = None

    def poll(self, timeout: int) -> bool:
        if self._poll is None:
            import select
            self._poll = select.poll()
            self._poll.register(master_proto.STATUS_FD, select.POLLIN)
        return bool(self._poll.poll(timeout))


_poll_status = _StatusPoll()


async def _guard(ctx: ServerContext, coro) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        pass
    except BaseException as exc:   # noqa: BLE001 - the panic path
        _die(ctx, exc)


# --- logging ---------------------------------------------------------------

def _log():
    from pfy.log import logger
    return logger


def _init_logging(opts: ServerOptions, cfg: Any) -> None:
    # Before the jail: the maillog_file or /dev/log is opened here and kept.
    from pfy.log import init_logging
    init_logging(cfg, opts.program, verbose=opts.verbose)


def log_fatal(msg: str) -> None:
    _log().log("fatal", msg)


def _warn(msg: str) -> None:
    _log().warning(msg)


def _die(ctx: ServerContext | None, exc: BaseException) -> None:
    """The end of the process: fatal, panic or a plain exit."""
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FATAL)
        if ctx:
            ctx.run_at_exit()
        _flush_and_exit(code)
    from pfy.config import ConfigError
    if isinstance(exc, (Fatal, ConfigError, UsageError)):
        log_fatal(str(exc))
        code = EXIT_FATAL
    else:
        log = _log()
        for line in "".join(traceback.format_exception(exc)).rstrip().splitlines():
            log.log("panic", line)
        log.log("panic", f"{type(exc).__name__}: {exc}")
        code = EXIT_PANIC
    if ctx:
        ctx.run_at_exit()
    _flush_and_exit(code)


PROFILE_ENV = "PFY_PROFILE"
_profiler = None


def _start_profile(program: str) -> None:
    """Debugging aid: with $PFY_PROFILE set to a folder (outside any
    chroot: profile with master.cf's chroot column "n"), each daemon runs
    its loop under cProfile, timed in CPU seconds (a loaded machine does
    not inflate a function that was merely waiting for the CPU), and
    writes PROGRAM.PID.prof there when it exits (also on SIGTERM, e.g.
    `postfix stop`).  Read with python3 -m pstats."""
    global _profiler
    folder = os.environ.get(PROFILE_ENV)
    if not folder:
        return
    import cProfile     # before the jail: the module may be out of reach after
    import time
    _profiler = cProfile.Profile(time.process_time)
    _profiler.dump_path = os.path.join(folder, f"{program}.{os.getpid()}.prof")


def _stop_profile() -> None:
    global _profiler
    prof, _profiler = _profiler, None
    if prof is not None:
        prof.disable()
        try:
            prof.dump_stats(prof.dump_path)
        except OSError:
            pass


def _flush_and_exit(code: int) -> None:
    _stop_profile()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:   # noqa: BLE001 - closed stream at exit
            pass
    os._exit(code)


# --- the jail ----------------------------------------------------------------

def _preload_for_jail() -> None:
    """Load what a chrooted or unprivileged process can no longer reach.

    For every daemon, whatever its pre_jail hook loaded: modules that the
    standard library (or a dependency) imports lazily on first use, which
    inside the jail would be an ImportError in the middle of a delivery.
    PFY_LATE_IMPORTS (see _trace_late_imports) finds what is still missing.
    """
    import encodings.idna       # noqa: F401 - socket.getaddrinfo of IDN names
    import encodings.ascii      # noqa: F401
    import encodings.latin_1    # noqa: F401
    import encodings.utf_8_sig  # noqa: F401 - "utf-8-sig" in table files
    import encodings.punycode   # noqa: F401 - IDNA A-labels (SMTPUTF8 domains)
    import time
    time.tzset()                # /etc/localtime is outside the jail
    time.localtime()
    # asyncio's run_in_executor makes its ThreadPoolExecutor on first use;
    # concurrent.futures imports the module lazily (module __getattr__).
    import concurrent.futures.thread   # noqa: F401
    # Tracebacks of a panic read source lines through linecache (they come
    # out without them inside the jail, but the panic itself must not fail).
    import linecache            # noqa: F401
    # Computed parameter defaults (myhostname, mynetworks...) are imported
    # on first read, which may come after the jail.
    import pfy.config._dynamic  # noqa: F401
    import socket as _s
    try:
        _s.getservbyname("smtp", "tcp")   # /etc/services is outside the jail
    except OSError:
        pass
    # dnspython loads its rdata classes and asyncio backend on first use:
    # preload them where the daemon has a resolver (smtpd, smtp).
    if "pfy.dns" in sys.modules or "dns.resolver" in sys.modules:
        import pfy.dns
        pfy.dns.preload()
        try:    # dnspython asks sniffio which async library runs, if installed
            import sniffio      # noqa: F401
        except ImportError:
            pass


LATE_IMPORTS_ENV = "PFY_LATE_IMPORTS"


def _open_late_imports() -> int:
    """Debugging aid: with $PFY_LATE_IMPORTS set to a file name, append one
    line per module imported after the jail (master passes its environment
    on, so `PFY_LATE_IMPORTS=/tmp/late postfix start` covers every daemon).
    A module listed there belongs in _preload_for_jail or a pre_jail hook.
    The file is opened here, before the jail; -1 when not tracing."""
    path = os.environ.get(LATE_IMPORTS_ENV)
    if not path:
        return -1
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        return -1


def _trace_late_imports(program: str, fd: int) -> None:
    """After the jail: log every import that still happens (see above)."""
    if fd < 0:
        return

    class _Tracer:
        @staticmethod
        def find_spec(name, path=None, target=None):
            try:
                os.write(fd, f"{program}[{os.getpid()}]: {name}\n".encode())
            except OSError:
                pass
            return None         # let the real finders do the work (or fail)
    sys.meta_path.insert(0, _Tracer)


def _drop_privileges(ctx: ServerContext) -> None:
    """chroot (-c) and switch to mail_owner (-u), only when we are root.

    Order matters: look the user up before chroot (the passwd file is outside),
    chroot before dropping root (chroot needs CAP_SYS_CHROOT), groups before
    the uid (setgroups needs root).
    """
    opts, cfg = ctx.options, ctx.cfg
    if os.geteuid() != 0:
        # Started by an ordinary user: run as that user, no chroot; the
        # working directory is queue_directory all the same (INTERNALS.md),
        # so relative queue paths mean the same in every mode.
        try:
            os.chdir(cfg.queue_directory)
        except OSError as exc:
            raise Fatal(f"chdir({cfg.queue_directory}): {exc.strerror}") from None
        return
    uid = gid = None
    if opts.unprivileged:
        import pwd
        owner = cfg.mail_owner
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            raise Fatal(f"file {cfg.config_directory}/main.cf: parameter mail_owner: "
                        f"unknown user name value: {owner}") from None
        if pw.pw_uid == 0:
            raise Fatal(f"file {cfg.config_directory}/main.cf: parameter mail_owner: "
                        f"user {owner} has privileged user ID")
        uid, gid = pw.pw_uid, pw.pw_gid
    if opts.chroot:
        jail = cfg.queue_directory
        try:
            os.chroot(jail)
            os.chdir("/")
        except OSError as exc:
            raise Fatal(f"chroot({jail}): {exc.strerror}") from None
        ctx.data["_chrooted"] = True
    else:
        try:
            os.chdir(cfg.queue_directory)
        except OSError as exc:
            raise Fatal(f"chdir({cfg.queue_directory}): {exc.strerror}") from None
    if uid is not None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() == 0 or os.geteuid() == 0:   # paranoia, as Postfix's set_ugid
            raise Fatal("privilege drop failed: still root")


# --- the serve loop ----------------------------------------------------------

class Lifecycle:
    """Start-up, the jail and the event loop; subclassed by each skeleton."""

    kind = "server"

    def __init__(self, *, pre_jail=None, post_jail=None, pre_accept=None,
                 solitary: bool = False, unlimited: bool = False,
                 service_args: bool = False,
                 argv: list[str] | None = None, program: str | None = None):
        self.pre_jail = pre_jail
        self.post_jail = post_jail
        self.pre_accept = pre_accept
        self.require_solitary = solitary
        self.unlimited = unlimited      # Postfix's MAIL_SERVER_UNLIMITED: no max_idle/max_use
        self.service_args = service_args    # the daemon reads ctx.options.service_args
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.program = program or os.path.basename(sys.argv[0] or "pfy")
        self.ctx: ServerContext | None = None
        self.listen_fds: list[int] = []
        self._idle_timer: asyncio.TimerHandle | None = None
        self._status_ok = True

    # -- start-up --

    def start(self) -> ServerContext:
        # Master gives us fds 0-2; a parent of "-S" (sendmail -bs) may not.
        from pfy.stdio import reopen_closed_stdio
        reopen_closed_stdio()
        try:
            opts = parse_server_args(self.argv, self.program,
                                     service_args=self.service_args)
        except UsageError as exc:
            log_fatal(str(exc))     # stderr: logging is not set up yet
            _flush_and_exit(EXIT_FATAL)
        _set_title(opts)
        try:
            from pfy.config import load_config, config_directory
            cfg = load_config(config_directory(), overrides=opts.overrides or None)
        except BaseException as exc:   # noqa: BLE001 - ConfigError and friends
            _die(None, exc)
        _init_logging(opts, cfg)
        # A table that cannot be opened degrades to temporary lookup
        # failures with one warning (Postfix's dict_surrogate), instead of
        # killing the daemon: mail that needs it waits, nothing is lost.
        from pfy.log import warning as _log_warning
        from pfy.tables import defer_open_errors
        defer_open_errors(_log_warning)
        generation = int(os.environ.get(master_proto.GENERATION_ENV, "0"), 16)
        ctx = ServerContext(cfg=cfg, options=opts, generation=generation)
        # The loop exists before the hooks, so pre_jail/post_jail may already
        # use ctx.call_later (it fires once serving starts).
        ctx.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(ctx.loop)
        self.ctx = ctx
        try:
            if self.require_solitary and not opts.solitary and not opts.standalone:
                raise Fatal(f"service {opts.service} requires a process limit of 1")
            self.listen_fds = self._inherited_fds(opts)
            if self.pre_jail:
                self.pre_jail(ctx)
            _preload_for_jail()
            self.preload()
            _start_profile(opts.program)
            late_fd = _open_late_imports()
            _drop_privileges(ctx)
            _trace_late_imports(opts.program, late_fd)
            if self.post_jail:
                self.post_jail(ctx)
        except BaseException as exc:   # noqa: BLE001 - fatal or panic
            _die(ctx, exc)
        return ctx

    def preload(self) -> None:
        """Skeleton-specific modules to load before the jail."""

    def _inherited_fds(self, opts: ServerOptions) -> list[int]:
        if opts.standalone:
            return []
        fds = list(range(master_proto.LISTEN_FD, master_proto.LISTEN_FD + opts.listen_count))
        for fd in fds + [master_proto.STATUS_FD]:
            try:
                os.fstat(fd)
            except OSError:
                raise Fatal(f"descriptor {fd} from master is not open "
                            f"(run {opts.program} from master, or with -S)") from None
            os.set_inheritable(fd, False)   # never leak master's fds to our children
        return fds

    # -- the loop --

    def run(self) -> None:
        """Start up, serve until told to stop, exit. Never returns."""
        ctx = self.start()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        # Python ignores SIGPIPE already: a dead peer is EPIPE, not a signal.
        try:
            loop = ctx.loop
            if not ctx.options.standalone:
                loop.add_reader(master_proto.STATUS_FD, self._on_status_event)
            self._arm_watchdog()
            self.setup(loop)
            self.arm_idle()
            if _profiler is not None:
                _profiler.enable()
            loop.run_forever()
        except BaseException as exc:   # noqa: BLE001 - the panic path
            _die(ctx, exc)
        _die(ctx, SystemExit(0))

    def setup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Each skeleton (single, multi, trigger) registers its listening
        descriptors with the loop here; this base class has none."""
        raise NotImplementedError(f"{type(self).__name__} is not a skeleton")

    def _on_sigterm(self, signum, frame) -> None:
        if self.ctx:
            self.ctx.run_at_exit()
        _flush_and_exit(0)

    def _on_status_event(self) -> None:
        # master never writes here: readable means EOF (master exited or the
        # service was reloaded). Finish what we are doing, accept no more.
        try:
            data = os.read(master_proto.STATUS_FD, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return
        self.ctx.loop.remove_reader(master_proto.STATUS_FD)
        self._status_ok = False
        self.ctx._master_gone = True
        if self.ctx.options.verbose:
            _log().info("master disconnect -- exiting")
        self.stop_accepting()

    def notify(self, status: int) -> None:
        if self._status_ok and not self.ctx.options.standalone:
            if not master_proto.notify(self.ctx.generation, status):
                self._status_ok = False

    def stop_accepting(self) -> None:
        """Stop taking clients; exit once current work is done."""
        self.ctx.stopping = True
        for fd in self.listen_fds:
            try:
                self.ctx.loop.remove_reader(fd)
            except (ValueError, OSError):
                pass
        self.maybe_exit()

    def busy(self) -> bool:
        return False

    def maybe_exit(self) -> None:
        if self.ctx.stopping and not self.busy():
            self.ctx.loop.stop()

    def served_one(self) -> bool:
        """Count a client (or wake-up); True when the process may take more.

        After max_use of them (unless unlimited), or once master is gone,
        the process stops accepting and exits when its work is done.  The
        caller reports itself available to master only when this is True:
        a process that will take no more clients stays "taken" in master's
        books, so master starts a replacement as soon as a client waits,
        instead of leaving it in the listen queue until this one exits.
        """
        ctx = self.ctx
        ctx.use_count += 1
        max_use = ctx.cfg.max_use
        if not self.unlimited and max_use > 0 and ctx.use_count >= max_use:
            self.stop_accepting()
        elif ctx.master_gone():
            self.stop_accepting()
        return not ctx.stopping

    def arm_idle(self) -> None:
        """(Re)start the max_idle timer; exit when it fires with no client."""
        if self._idle_timer:
            self._idle_timer.cancel()
            self._idle_timer = None
        max_idle = self.ctx.cfg.max_idle
        if self.unlimited or max_idle <= 0 or self.busy():
            return
        self._idle_timer = self.ctx.loop.call_later(max_idle, self._on_idle)

    def disarm_idle(self) -> None:
        if self._idle_timer:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _on_idle(self) -> None:
        if self.busy():
            return
        if self.ctx.options.verbose:
            _log().info("idle timeout -- exiting")
        self.stop_accepting()

    def _arm_watchdog(self) -> None:
        # Postfix's watchdog: the loop must come round within daemon_timeout;
        # a handler stuck longer than that is killed (SIGALRM's default action
        # would be silent, so log it first).
        timeout = self.ctx.cfg.daemon_timeout
        if timeout <= 0:
            return
        signal.signal(signal.SIGALRM, self._on_watchdog)

        def rearm() -> None:
            signal.alarm(timeout)
            self.ctx.loop.call_later(max(1, timeout // 4), rearm)
        rearm()

    def _on_watchdog(self, signum, frame) -> None:
        log_fatal("watchdog timeout")
        if self.ctx:
            self.ctx.run_at_exit()
        _flush_and_exit(EXIT_FATAL)


def _set_title(opts: ServerOptions) -> None:
    """ps shows `qmgr -l -t unix -u` as for Postfix, not the interpreter."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(" ".join(opts.argv))


def fd_kind(fd: int) -> str:
    """'fifo', 'stream' (a listening stream socket), 'dgram' or 'other'."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        s = socket.socket(fileno=os.dup(fd))
        try:
            return "dgram" if s.type == socket.SOCK_DGRAM else "stream"
        finally:
            s.close()
    return "other"


def is_client_error(exc: BaseException) -> bool:
    """A peer that went away or timed out: a warning, never a panic."""
    return isinstance(exc, (ConnectionError, TimeoutError))


def warn_client(ctx: ServerContext, exc: BaseException) -> None:
    _warn(f"{ctx.service}: client connection: {exc}")
