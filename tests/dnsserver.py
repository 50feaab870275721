"""A tiny authoritative DNS server on loopback, for tests.

    from tests.dnsserver import DnsServer
    zones = {
        "mx.example": {"A": ["192.0.2.1"], "MX": [(10, "mx.example")]},
        "2.0.0.127.zen.example": {"A": ["127.0.0.2"], "TXT": ["listed"]},
        "7.2.0.192.in-addr.arpa": {"PTR": ["mx.example"]},
    }
    with DnsServer(zones) as dns:          # UDP and TCP on 127.0.0.1:dns.port
        os.environ["PFY_RESOLV_CONF"] = dns.resolv_conf
        dns.zones["new.example"] = {"A": ["192.0.2.9"]}   # live edits are seen
        dns.fail.add("broken.example")     # SERVFAIL: a temporary failure
        dns.secure.add("mx.example")       # its answers carry the AD bit ("secure",
                                           # as from a validating resolver: DANE tests)

Names are absolute without the trailing dot, case-insensitive. A name that
is in `zones` but has no records of the asked type answers NODATA; a name
that is not in `zones` (and is no parent of a name that is) answers
NXDOMAIN. Values: A/AAAA/NS/PTR/CNAME/TXT strings, MX (preference, host),
TLSA "usage selector mtype hex" (at "_25._tcp.mx.example").
Every answer is authoritative with TTL `ttl` (default 1 s, so pfy's cache
does not hide edits between tests for long).
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DnsServer"]


def _free_port() -> int:
    # One port free for both UDP and TCP.
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise OSError("no free port for the test DNS server")


class DnsServer:
    def __init__(self, zones: dict | None = None, ttl: int = 1, host: str = "127.0.0.1"):
        self.zones: dict[str, dict] = {k.lower().rstrip("."): v for k, v in (zones or {}).items()}
        self.fail: set[str] = set()
        self.secure: set[str] = set()      # names whose answers set AD
        self.ttl = ttl
        self.host = host
        self.port = 0
        self.queries: list[tuple[str, str]] = []      # (name, type) as received
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._dir = None
        self.resolv_conf = ""

    # -- answers -------------------------------------------------------
    def _exists(self, name: str) -> bool:
        if name in self.zones:
            return True
        suffix = "." + name
        return any(k.endswith(suffix) for k in self.zones)   # empty non-terminal

    def answer(self, wire: bytes) -> bytes | None:
        try:
            q = dns.message.from_wire(wire)
        except Exception:
            return None
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        if q.question and q.question[0].name.to_text(omit_final_dot=True).lower() in self.secure:
            r.flags |= dns.flags.AD
        if not q.question:
            r.set_rcode(dns.rcode.FORMERR)
            return r.to_wire()
        question = q.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.fail or any(name.endswith("." + f) for f in self.fail):
            r.set_rcode(dns.rcode.SERVFAIL)
            return r.to_wire()
        if not self._exists(name):
            r.set_rcode(dns.rcode.NXDOMAIN)
            return r.to_wire()
        records = self.zones.get(name, {})
        values = records.get(rdtype)
        if values is None and "CNAME" in records and rdtype != "CNAME":
            rdtype, values = "CNAME", records["CNAME"]
        if values:
            texts = []
            for v in values:
                if rdtype == "MX":
                    pref, host = v
                    texts.append(f"{pref} {host.rstrip('.')}.")
                elif rdtype in ("NS", "PTR", "CNAME"):
                    texts.append(v.rstrip(".") + ".")
                elif rdtype == "TXT":
                    texts.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
                else:
                    texts.append(v)
            rrset = dns.rrset.from_text_list(question.name, self.ttl, dns.rdataclass.IN,
                                             rdtype, texts)
            r.answer.append(rrset)
        return r.to_wire()

    # -- transport -----------------------------------------------------
    def _udp_loop(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            out = self.answer(data)
            if out is not None:
                if len(out) > 512:
                    # RFC 1035 4.2.1: truncate and let the client retry over TCP.
                    msg = dns.message.from_wire(out)
                    msg.answer = []
                    msg.flags |= dns.flags.TC
                    out = msg.to_wire()
                try:
                    sock.sendto(out, peer)
                except OSError:
                    pass

    def _tcp_loop(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    head = conn.recv(2)
                    if len(head) < 2:
                        continue
                    (n,) = struct.unpack("!H", head)
                    data = b""
                    while len(data) < n:
                        chunk = conn.recv(n - len(data))
                        if not chunk:
                            break
                        data += chunk
                    out = self.answer(data)
                    if out is not None:
                        conn.sendall(struct.pack("!H", len(out)) + out)
                except OSError:
                    pass

    def start(self) -> "DnsServer":
        self.port = _free_port()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((self.host, self.port))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((self.host, self.port))
        tcp.listen(16)
        self._socks = [udp, tcp]
        for target, sock in ((self._udp_loop, udp), (self._tcp_loop, tcp)):
            t = threading.Thread(target=target, args=(sock,), daemon=True)
            t.start()
            self._threads.append(t)
        self._dir = tempfile.mkdtemp(prefix="pfy-dns-")
        self.resolv_conf = os.path.join(self._dir, "resolv.conf")
        with open(self.resolv_conf, "w") as f:
            f.write(f"nameserver {self.host}:{self.port}\noptions timeout:1 attempts:1\n")
        os.chmod(self._dir, 0o755)
        os.chmod(self.resolv_conf, 0o644)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for s in self._socks:
            s.close()
        if self._dir:
            try:
                os.unlink(self.resolv_conf)
                os.rmdir(self._dir)
            except OSError:
                pass

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
