"""The default mynetworks, from the local interface addresses, as Postfix's
mynetworks(3): style host (each address), subnet (each address's network)
or class (IPv4 class A/B/C network; IPv6 as subnet).  Only imported when
mynetworks is not set in main.cf.
"""

import ctypes
import ctypes.util
import ipaddress
import socket

__all__ = ["local_addresses", "mynetworks"]


class _Sockaddr(ctypes.Structure):
    _fields_ = [("sa_family", ctypes.c_ushort), ("sa_data", ctypes.c_ubyte * 14)]


class _Sockaddr6(ctypes.Structure):
    _fields_ = [("sin6_family", ctypes.c_ushort), ("sin6_port", ctypes.c_ushort),
                ("sin6_flowinfo", ctypes.c_uint32), ("sin6_addr", ctypes.c_ubyte * 16),
                ("sin6_scope_id", ctypes.c_uint32)]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [("ifa_next", ctypes.POINTER(_Ifaddrs)), ("ifa_name", ctypes.c_char_p),
                     ("ifa_flags", ctypes.c_uint), ("ifa_addr", ctypes.POINTER(_Sockaddr)),
                     ("ifa_netmask", ctypes.POINTER(_Sockaddr)),
                     ("ifa_ifu", ctypes.POINTER(_Sockaddr)), ("ifa_data", ctypes.c_void_p)]


def _raw(sa, family: int) -> bytes | None:
    if not sa:
        return None
    if family == socket.AF_INET:
        return bytes(sa.contents.sa_data[2:6])
    return bytes(ctypes.cast(sa, ctypes.POINTER(_Sockaddr6)).contents.sin6_addr)


def local_addresses() -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Every interface address with its netmask, IPv4 first (as Postfix
    lists them)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        return []
    v4, v6 = [], []
    try:
        p = head
        while p:
            ifa = p.contents
            if ifa.ifa_addr:
                fam = ifa.ifa_addr.contents.sa_family
                if fam in (socket.AF_INET, socket.AF_INET6):
                    addr, mask = _raw(ifa.ifa_addr, fam), _raw(ifa.ifa_netmask, fam)
                    bits = sum(bin(b).count("1") for b in mask) if mask else (32 if fam == socket.AF_INET else 128)
                    if fam == socket.AF_INET:
                        v4.append(ipaddress.IPv4Interface((addr, bits)))
                    else:
                        v6.append(ipaddress.IPv6Interface((addr, bits)))
            p = ifa.ifa_next
    finally:
        libc.freeifaddrs(head)
    return v4 + v6


def _fmt(net) -> str:
    if net.version == 6:
        return f"[{net.network_address}]/{net.prefixlen}"
    return str(net)


def mynetworks(style: str, protocols: str = "all") -> str:
    style = style.strip().lower()
    protos = protocols.replace(",", " ").lower().split()
    want4 = "all" in protos or "ipv4" in protos
    want6 = "all" in protos or "ipv6" in protos
    out: list[str] = []
    for iface in local_addresses():
        if (iface.version == 4 and not want4) or (iface.version == 6 and not want6):
            continue
        if style == "host":
            net = ipaddress.ip_network(f"{iface.ip}/{iface.max_prefixlen}")
        elif style == "class" and iface.version == 4:
            first = iface.ip.packed[0]
            # RFC 791 classes: A < 128, B < 192, C < 224; others as subnet.
            bits = 8 if first < 128 else 16 if first < 192 else 24 if first < 224 else iface.network.prefixlen
            net = ipaddress.ip_network(f"{iface.ip}/{bits}", strict=False)
        else:
            net = iface.network
        text = _fmt(net)
        if text not in out:
            out.append(text)
    return " ".join(out)
