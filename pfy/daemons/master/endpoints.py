"""Listening endpoints of master.cf services: what to open, then opening it.

master(5): an inet service name is `host:port`, `*:port`, `[ipv6]:port`, or
a port alone (then every address in inet_interfaces); the port is a number
or a name from /etc/services. unix, unix-dgram, fifo and pass services live
in private/NAME or public/NAME under queue_directory.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

__all__ = ["Endpoint", "EndpointError", "inet_endpoints", "local_endpoint", "open_endpoint"]

LISTEN_BACKLOG = 100     # Postfix's inet_listen()/unix_listen() backlog (master_listen.c)
UNIX_MODE = 0o666        # master_listen.c: unix sockets 0666; private/ (0700) guards them
FIFO_MODE = 0o622        # master_listen.c: fifo_listen(..., 0622, ...)


class EndpointError(Exception):
    """A master.cf service endpoint that cannot be parsed or opened."""


@dataclass(frozen=True)
class Endpoint:
    kind: str               # "inet", "unix", "unix-dgram", "fifo", "pass"
    address: str            # IP literal, or path relative to queue_directory
    port: int = 0

    def describe(self) -> str:
        if self.kind == "inet":
            host = f"[{self.address}]" if ":" in self.address else self.address
            return f"{host}:{self.port}"
        return self.address


def _port(text: str) -> int:
    if text.isdigit():
        n = int(text)
        if 0 < n < 65536:
            return n
        raise EndpointError(f"bad port number: {text}")
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise EndpointError(f"unknown service: {text}/tcp") from None


def _split_host_port(name: str) -> tuple[str | None, str]:
    if name.startswith("["):
        end = name.find("]")
        if end < 0 or name[end + 1:end + 2] != ":":
            raise EndpointError(f"bad inet service name: {name}")
        return name[1:end], name[end + 2:]
    host, sep, port = name.rpartition(":")
    if not sep:
        return None, name
    return host, port


def _wildcards(protocols: list[str]) -> list[str]:
    out = []
    if "ipv4" in protocols:
        out.append("0.0.0.0")
    if "ipv6" in protocols and socket.has_ipv6:
        out.append("::")
    return out


def _protocols(inet_protocols: list[str]) -> list[str]:
    protos = [p.lower() for p in inet_protocols] or ["all"]
    if "all" in protos:
        return ["ipv4", "ipv6"]
    return protos


def _resolve(host: str, protocols: list[str]) -> list[str]:
    if host in ("", "*"):
        return _wildcards(protocols)
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EndpointError(f"host not found: {host}: {exc.strerror}") from None
    out = []
    for family, _, _, _, sa in infos:
        if family == socket.AF_INET and "ipv4" in protocols and sa[0] not in out:
            out.append(sa[0])
        elif family == socket.AF_INET6 and "ipv6" in protocols and sa[0] not in out:
            out.append(sa[0])
    if not out:
        raise EndpointError(f"host {host}: no address for inet_protocols {','.join(protocols)}")
    return out


def inet_endpoints(name: str, inet_interfaces: list[str],
                   inet_protocols: list[str]) -> list[Endpoint]:
    """The addresses an inet service listens on (master_ent.c get_master_ent)."""
    protocols = _protocols(inet_protocols)
    host, port_text = _split_host_port(name)
    port = _port(port_text)
    if host is not None:
        addrs = _resolve(host, protocols)
    else:
        addrs = []
        ifaces = [i.lower() for i in inet_interfaces] or ["all"]
        for iface in ifaces:
            if iface == "all":
                found = _wildcards(protocols)
            elif iface == "loopback-only":
                found = [a for a, p in (("127.0.0.1", "ipv4"), ("::1", "ipv6")) if p in protocols]
            else:
                found = _resolve(iface.strip("[]"), protocols)
            addrs += [a for a in found if a not in addrs]
    return [Endpoint("inet", a, port) for a in addrs]


def local_endpoint(kind: str, name: str, private: bool) -> Endpoint:
    if "/" in name:
        # master.cf service names are plain names; a path would escape the queue.
        raise EndpointError(f"bad {kind} service name: {name}")
    return Endpoint(kind, f"{'private' if private else 'public'}/{name}")


def open_endpoint(ep: Endpoint, queue_directory: str, owner: tuple[int, int] | None = None):
    """Open ep; return a socket, or an int fd for a FIFO.

    Paths are relative to queue_directory. owner (uid, gid) is applied to a
    FIFO, which its chrooted unprivileged reader must be able to open.
    """
    if ep.kind == "inet":
        family = socket.AF_INET6 if ":" in ep.address else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # "::" must not also take the IPv4 port that 0.0.0.0 takes.
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((ep.address, ep.port))
            s.listen(LISTEN_BACKLOG)
        except OSError as exc:
            s.close()
            raise EndpointError(f"bind {ep.address} port {ep.port}: {exc.strerror}") from None
        s.setblocking(False)
        return s
    path = os.path.join(queue_directory, ep.address)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if ep.kind == "fifo":
        try:
            st = os.lstat(path)
            if not stat.S_ISFIFO(st.st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        if not os.path.exists(path):
            os.mkfifo(path, FIFO_MODE)
        os.chmod(path, FIFO_MODE)
        if owner:
            os.chown(path, *owner)
        # Read-write, as Postfix's fifo_listen: the FIFO never reports EOF.
        return os.open(path, os.O_RDWR | os.O_NONBLOCK)
    stype = socket.SOCK_DGRAM if ep.kind == "unix-dgram" else socket.SOCK_STREAM
    s = socket.socket(socket.AF_UNIX, stype)
    try:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        s.bind(path)
        os.chmod(path, UNIX_MODE)
        if owner:
            os.chown(path, *owner)     # master_listen.c creates them as mail_owner
        if stype == socket.SOCK_STREAM:
            s.listen(LISTEN_BACKLOG)
    except OSError as exc:
        s.close()
        raise EndpointError(f"bind {path}: {exc.strerror}") from None
    s.setblocking(False)
    return s
