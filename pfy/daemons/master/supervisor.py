"""master's event loop: services, children, status reports, wakeups, signals.

One thread, one selector. Signals only write to a wakeup pipe
(signal.set_wakeup_fd) and are handled in the loop, so no handler ever runs
in the middle of the bookkeeping. Children are reaped with waitpid(WNOHANG)
after every SIGCHLD. Nothing a child does (crash, garbage on the status
channel, exiting at once) can raise out of the loop.
"""

from __future__ import annotations

import heapq
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field

from pfy.daemons.master.endpoints import (Endpoint, EndpointError, inet_endpoints,
                                          local_endpoint, open_endpoint)
from pfy.server import master_proto
from pfy.server.paths import daemon_argv

__all__ = ["ServiceSpec", "Supervisor", "build_specs"]

WAKEUP_REQUEST = b"W"       # trigger.h TRIGGER_REQ_WAKEUP
STOP_GRACE = 5.0            # seconds children get after SIGTERM before SIGKILL
                            # (postfix-script stop waits 5 s, then kill -9)


@dataclass
class ServiceSpec:
    """One master.cf line, resolved: what to run and where it listens."""
    name: str
    type: str
    endpoints: list[Endpoint]
    path: str                   # the daemon executable
    argv: list[str]             # without the executable prefix
    max_proc: int               # 0 = no limit
    wakeup: int
    wakeup_conditional: bool
    unpriv: bool
    chroot: bool
    file: str = ""
    line: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.type)


def _child_argv(entry, name: str, command: str, max_proc: int, verbose: int,
                listen_count: int) -> list[str]:
    """Postfix's master_ent.c order: `qmgr -l -t unix -u`, `smtpd -n smtp -t inet -u -c ...`."""
    argv = [command]
    if max_proc == 1:
        argv.append("-l")
    if os.path.basename(command) != name:
        argv += ["-n", name]
    argv += ["-t", entry.type]
    argv += ["-v"] * verbose
    if entry.unpriv:
        argv.append("-u")
    if entry.chroot:
        argv.append("-c")
    # Before master.cf's own words: the skeleton stops parsing options at
    # the first word that is not one, and hands the rest to the service.
    if listen_count > 1:
        argv += ["-s", str(listen_count)]
    for k, v in entry.overrides.items():
        argv += ["-o", f"{k}={v}"]
    argv += list(entry.args)
    return argv


def build_specs(entries, cfg, verbose: int = 0) -> list[ServiceSpec]:
    """master.cf entries -> ServiceSpecs; EndpointError names file and line."""
    specs = []
    seen = set()
    for e in entries:
        where = f"file {e.path}: line {e.line}"
        if (e.service, e.type) in seen:
            # master_ent.c: a duplicate is a fatal error
            raise EndpointError(f"{where}: duplicate service name: {e.service}/{e.type}")
        seen.add((e.service, e.type))
        max_proc = e.maxproc if e.maxproc is not None else cfg.default_process_limit
        try:
            if e.type == "inet":
                eps = inet_endpoints(e.service, cfg.inet_interfaces, cfg.inet_protocols)
            else:
                eps = [local_endpoint(e.type, e.service, e.private)]
        except EndpointError as exc:
            raise EndpointError(f"{where}: {exc}") from None
        command = e.command
        path = command if command.startswith("/") else os.path.join(cfg.daemon_directory, command)
        specs.append(ServiceSpec(
            name=e.service, type=e.type, endpoints=eps, path=path,
            argv=_child_argv(e, e.service, os.path.basename(command), max_proc,
                             verbose, len(eps)),
            max_proc=max_proc, wakeup=e.wakeup or 0,
            wakeup_conditional=bool(getattr(e, "wakeup_conditional", False)),
            unpriv=e.unpriv, chroot=e.chroot, file=e.path, line=e.line))
    return specs


@dataclass
class Proc:
    pid: int
    service: "Service"
    generation: int
    avail: bool = True
    use_count: int = 0


@dataclass
class Service:
    spec: ServiceSpec
    listeners: list               # sockets, or int fds (FIFOs)
    generation: int
    status_master: socket.socket
    status_child: socket.socket
    procs: dict = field(default_factory=dict)    # pid -> Proc
    avail: int = 0
    throttled_until: float = 0.0
    listening: bool = False
    used: bool = False            # a process was ever started (the "?" wakeup)
    retired: bool = False

    def fds(self) -> list[int]:
        return [x if isinstance(x, int) else x.fileno() for x in self.listeners]


class Supervisor:
    def __init__(self, cfg, specs: list[ServiceSpec], log, *, config_dir: str,
                 loader=None, exit_time: float = 0.0):
        self.cfg = cfg
        self.log = log
        self.config_dir = config_dir
        self.loader = loader          # () -> (cfg, specs), for SIGHUP
        self.sel = selectors.DefaultSelector()
        self.services: dict[tuple[str, str], Service] = {}
        self.procs: dict[int, Proc] = {}
        self.timers: list = []         # heap of (when, seq, callback)
        self._seq = 0
        self.generation = int(time.time()) & 0xFFFFFF
        self.exit_time = exit_time
        self._stopping = False
        self.owner = self._owner()
        self._sig_r, self._sig_w = os.pipe()
        os.set_blocking(self._sig_r, False)
        os.set_blocking(self._sig_w, False)
        self.pending_specs = specs
        self._devnull = os.open(os.devnull, os.O_RDWR)

    # -- set-up ------------------------------------------------------------

    def _owner(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        import pwd
        pw = pwd.getpwnam(self.cfg.mail_owner)
        return pw.pw_uid, pw.pw_gid

    def open_all(self) -> None:
        """Open every endpoint (fatal on failure, before we tell anyone we run)."""
        for spec in self.pending_specs:
            self._add_service(spec, self._open(spec))
        self.pending_specs = []

    def _open(self, spec: ServiceSpec) -> list:
        opened = []
        try:
            for ep in spec.endpoints:
                opened.append(open_endpoint(ep, self.cfg.queue_directory, self.owner))
        except EndpointError as exc:
            for x in opened:
                _close(x)
            raise EndpointError(f"{spec.name}/{spec.type}: {exc}") from None
        return opened

    def _add_service(self, spec: ServiceSpec, listeners: list) -> Service:
        self.generation += 1
        m, c = master_proto.status_pair()
        svc = Service(spec=spec, listeners=listeners, generation=self.generation,
                      status_master=m, status_child=c)
        self.services[spec.key] = svc
        self.sel.register(m, selectors.EVENT_READ, ("status", svc))
        if spec.wakeup > 0:
            # The first wake-up is immediate, as Postfix's master_wakeup_init:
            # mail that waited in maildrop/ while the system was down is
            # picked up at start, not a timer period later.
            self._schedule(0, lambda s=svc: self._wakeup(s))
        self._update_listen(svc)
        return svc

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _noop)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.sel.register(self._sig_r, selectors.EVENT_READ, ("signal", None))

    # -- the loop ------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or -e exit_time); return the exit code."""
        if self.exit_time > 0:
            self._schedule(self.exit_time, lambda: self._terminate(None))
        while not self._stopping:
            timeout = None
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            try:
                events = self.sel.select(timeout)
            except InterruptedError:
                events = []
            for key, _ in events:
                what, obj = key.data
                try:
                    if what == "signal":
                        self._on_signals()
                    elif what == "status":
                        self._on_status(obj)
                    elif what == "listen":
                        self._on_listen(obj)
                except Exception as exc:   # noqa: BLE001 - master never dies of a child
                    self.log.warning(f"master: {what} event: {type(exc).__name__}: {exc}")
                if self._stopping:
                    break
            self._run_timers()
        return 0

    def _schedule(self, delay: float, callback) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self._seq, callback))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, cb = heapq.heappop(self.timers)
            try:
                cb()
            except Exception as exc:   # noqa: BLE001
                self.log.warning(f"master: timer: {type(exc).__name__}: {exc}")

    def _on_signals(self) -> None:
        try:
            data = os.read(self._sig_r, 512)
        except BlockingIOError:
            return
        sigs = set(data)
        if signal.SIGCHLD in sigs:
            self.reap()
        if signal.SIGHUP in sigs:
            self.reload()
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig in sigs:
                self._terminate(sig)
                return

    # -- children ------------------------------------------------------------

    def _update_listen(self, svc: Service) -> None:
        """master_avail_listen(): watch the endpoints only when a client
        could be waiting with nobody to take it."""
        want = (not svc.retired and not self._stopping and svc.avail < 1
                and (svc.spec.max_proc == 0 or len(svc.procs) < svc.spec.max_proc)
                and time.monotonic() >= svc.throttled_until)
        if want == svc.listening:
            return
        for fd in svc.fds():
            if want:
                self.sel.register(fd, selectors.EVENT_READ, ("listen", svc))
            else:
                self.sel.unregister(fd)
        svc.listening = want

    def _on_listen(self, svc: Service) -> None:
        # A connection (or trigger bytes) is waiting and nobody is idle.
        self.spawn(svc)

    def spawn(self, svc: Service) -> None:
        spec = svc.spec
        executable, prefix = daemon_argv(spec.path)
        # A Python daemon runs as `python PATH args` (its title then says
        # `qmgr -l -t unix -u`); anything else gets Postfix's argv[0].
        argv = (prefix if len(prefix) > 1 else spec.argv[:1]) + spec.argv[1:]
        fds = {0: self._devnull, 1: 1, 2: 2, master_proto.STATUS_FD: svc.status_child.fileno()}
        for i, fd in enumerate(svc.fds()):
            fds[master_proto.LISTEN_FD + i] = fd
        env = dict(os.environ)
        env["MAIL_CONFIG"] = self.config_dir
        env[master_proto.GENERATION_ENV] = "%x" % svc.generation
        try:
            pid = master_proto.spawn(argv, fds, env, executable=executable)
        except OSError as exc:
            self.log.warning(f"{spec.path}: cannot start: {exc.strerror} -- throttling")
            self._throttle(svc)
            return
        proc = Proc(pid=pid, service=svc, generation=svc.generation)
        self.procs[pid] = proc
        svc.procs[pid] = proc
        svc.avail += 1
        svc.used = True
        self._update_listen(svc)

    def _on_status(self, svc: Service) -> None:
        while True:
            try:
                data = svc.status_master.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not data:
                return
            rep = master_proto.decode_status(data)
            if rep is None:
                self.log.warning(f"master: bad status record from service {svc.spec.name}")
                continue
            pid, gen, status = rep
            proc = svc.procs.get(pid)
            if proc is None or gen != svc.generation:
                continue        # an exited process, or an older generation
            if status == master_proto.STAT_TAKEN and proc.avail:
                proc.avail = False
                proc.use_count += 1
                svc.avail -= 1
            elif status == master_proto.STAT_AVAIL and not proc.avail:
                proc.avail = True
                svc.avail += 1
            self._update_listen(svc)

    def reap(self) -> None:
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.procs.pop(pid, None)
            if proc is None:
                continue
            svc = proc.service
            svc.procs.pop(pid, None)
            if proc.avail and proc.generation == svc.generation:
                svc.avail -= 1
            path = svc.spec.path
            bad = False
            if os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGTERM and \
                    (self._stopping or svc.retired):
                pass        # our own SIGTERM at stop or service removal
            elif os.WIFSIGNALED(st):
                self.log.warning(f"process {path} pid {pid} killed by signal {os.WTERMSIG(st)}")
                bad = True
            elif os.WEXITSTATUS(st) != 0:
                self.log.warning(f"process {path} pid {pid} exit status {os.WEXITSTATUS(st)}")
                bad = True
            if bad and not self._stopping and not svc.retired and proc.use_count == 0 \
                    and proc.generation == svc.generation and svc.throttled_until == 0.0:
                # master_spawn.c: died before serving anyone: a broken command
                self.log.warning(f"{path}: bad command startup -- throttling")
                self._throttle(svc)
            if not svc.retired:
                self._update_listen(svc)

    def _throttle(self, svc: Service) -> None:
        delay = self.cfg.service_throttle_time
        svc.throttled_until = time.monotonic() + delay
        self._update_listen(svc)

        def unthrottle() -> None:
            svc.throttled_until = 0.0
            self._update_listen(svc)
        self._schedule(delay, unthrottle)

    def _wakeup(self, svc: Service) -> None:
        if svc.retired or self._stopping:
            return
        self._schedule(svc.spec.wakeup, lambda: self._wakeup(svc))
        if svc.spec.wakeup_conditional and not svc.used:
            return          # master(5): "?" = no wake-up before first use
        ep = svc.spec.endpoints[0]
        path = os.path.join(self.cfg.queue_directory, ep.address)
        try:
            if svc.spec.type == "fifo":
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                try:
                    os.write(fd, WAKEUP_REQUEST)
                finally:
                    os.close(fd)
            elif svc.spec.type in ("unix", "inet"):
                if ep.kind == "inet":
                    fam = socket.AF_INET6 if ":" in ep.address else socket.AF_INET
                    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(ep.address, ep.address)
                    addr = (host, ep.port)
                else:
                    fam, addr = socket.AF_UNIX, path
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect(addr)
                    s.send(WAKEUP_REQUEST)
                except (BlockingIOError, InterruptedError):
                    pass        # backlog full: plenty of wake-ups pending already
                finally:
                    s.close()
        except OSError as exc:
            self.log.warning(f"master: wakeup {svc.spec.name}/{svc.spec.type}: {exc.strerror}")

    # -- reload and stop -------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: new main.cf and master.cf; no listener is closed that the
        new configuration still uses, so no pending connection is dropped."""
        try:
            cfg, specs = self.loader()
        except Exception as exc:   # noqa: BLE001 - keep running the old config
            self.log.warning(f"reload failed, keeping the old configuration: {exc}")
            return
        self.cfg = cfg
        old = self.services
        self.services = {}
        for spec in specs:
            prev = old.pop(spec.key, None)
            if prev is not None and prev.spec.endpoints == spec.endpoints:
                self._unwatch(prev)
                listeners = prev.listeners
                prev.listeners = []
            else:
                try:
                    listeners = self._open(spec)
                except EndpointError as exc:
                    self.log.warning(f"reload: {exc}")
                    if prev is not None:
                        old[spec.key] = prev     # keep serving the old one
                    continue
            if prev is not None:
                self._retire(prev, terminate=False)
            self._add_service(spec, listeners)
        for gone in old.values():
            if gone.listeners:
                self._retire(gone, terminate=True)
            else:
                self.services[gone.spec.key] = gone   # a failed re-open above
        # Logged once the new endpoints are open, so "reload" means "ready".
        self.log.info(f"reload -- version {_version()}, configuration {self.config_dir}")

    def _unwatch(self, svc: Service) -> None:
        if svc.listening:
            for fd in svc.fds():
                self.sel.unregister(fd)
            svc.listening = False

    def _retire(self, svc: Service, terminate: bool) -> None:
        """Old generation: its children see EOF on the status channel, finish
        their work and exit. A removed service's children are terminated at
        once (master(8) SIGHUP)."""
        self._unwatch(svc)
        svc.retired = True
        for x in svc.listeners:
            _close(x)
        svc.listeners = []
        try:
            self.sel.unregister(svc.status_master)
        except (KeyError, ValueError):
            pass
        svc.status_master.close()
        svc.status_child.close()
        if terminate:
            for pid in list(svc.procs):
                _kill(pid, signal.SIGTERM)

    def _terminate(self, sig: int | None) -> None:
        if sig is not None:
            self.log.info(f"terminating on signal {sig}")
        else:
            self.log.info("terminating on timer (-e)")
        self._stopping = True
        for svc in self.services.values():
            self._retire(svc, terminate=False)
        for pid in list(self.procs):
            _kill(pid, signal.SIGTERM)
        # Wait a little so that sockets the children hold are closed when
        # `postfix stop` returns and a new master can bind them.
        deadline = time.monotonic() + STOP_GRACE
        while self.procs and time.monotonic() < deadline:
            self.reap()
            if self.procs:
                time.sleep(0.02)
        for pid in list(self.procs):
            _kill(pid, signal.SIGKILL)
        self.reap()


def _noop(signum, frame) -> None:
    pass        # the wakeup fd carries the signal number to the loop


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _close(x) -> None:
    try:
        if isinstance(x, int):
            os.close(x)
        else:
            x.close()
    except OSError:
        pass


def _version() -> str:
    import pfy
    return pfy.__version__
