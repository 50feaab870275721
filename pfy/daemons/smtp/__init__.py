"""smtp, lmtp - deliver mail over SMTP and LMTP.

SYNOPSIS
    smtp [generic daemon options]     (master.cf: smtp unix - - y - - smtp)
    lmtp [generic daemon options]     (master.cf: lmtp unix - - y - - lmtp)

DESCRIPTION
    Takes delivery requests from qmgr (pfy.ipc.delivery) and delivers each
    message to the next hop the request names: a domain (MX lookup, with
    A/AAAA fallback), [host], [host]:port or host:port for smtp; unix:/path,
    inet:host:port or [host]:port for lmtp.  One process serves many
    deliveries at once (the multi skeleton); master.cf's maxproc adds
    processes for CPU parallelism.  The program knows it is lmtp from its
    name (libexec/lmtp), and then reads the lmtp_* parameters.

    Per-recipient results are logged in Postfix's form and reported to
    qmgr: sent (marked done in the queue file at once), deferred (4xx,
    lost connections, timeouts, DNS trouble) or bounced (5xx), with the
    server's reply quoted.  Sessions are cached in the process for reuse
    (see pfy.daemons.smtp.cache for why not scache(8)).

SECURITY
    Moderately sensitive: talks to untrusted servers on the network.  Runs
    chrooted (master.cf) as mail_owner; reads the queue file and writes
    only done marks into it.  Tables (smtp_sasl_password_maps,
    smtp_tls_policy_maps), CA certificates and the resolver configuration
    are opened before chroot.  SASL passwords are never logged, and go only
    to servers allowed by smtp_sasl_security_options /
    smtp_sasl_tls_security_options.

PARAMETERS
    relayhost, smtp_fallback_relay, smtp_host_lookup, inet_protocols,
    smtp_bind_address(6), smtp_mx_address_limit, smtp_mx_session_limit,
    smtp_helo_name, smtp_*_timeout, smtp_skip_5xx_greeting,
    smtp_line_length_limit, disable_mime_output_conversion, smtputf8_enable,
    smtp_tls_security_level, smtp_tls_policy_maps, smtp_tls_CAfile,
    smtp_tls_CApath, smtp_tls_mandatory_protocols, smtp_tls_mandatory_ciphers,
    smtp_tls_fingerprint_cert_match, smtp_tls_fingerprint_digest,
    smtp_tls_verify_cert_match, smtp_tls_secure_cert_match,
    smtp_dns_support_level (dnssec: DANE), smtp_tls_dane_insecure_mx_policy,
    smtp_tls_force_insecure_host_tlsa_lookup, tls_dane_digests,
    smtp_sasl_auth_enable, smtp_sasl_password_maps, smtp_sasl_mechanism_filter,
    smtp_sasl_security_options, smtp_sasl_tls_security_options,
    smtp_sender_dependent_authentication, smtp_connection_cache_on_demand,
    smtp_connection_cache_destinations, smtp_connection_cache_time_limit,
    smtp_connection_reuse_time_limit, soft_bounce; the lmtp_ equivalents.
"""

from __future__ import annotations

import asyncio
import os
import sys

# Everything is imported here, before chroot: the jail has no Python tree.
# asyncio runs getaddrinfo() in its default executor and dnspython picks
# its asyncio backend lazily: both are loaded now.
import concurrent.futures.thread  # noqa: F401
import dns._asyncio_backend  # noqa: F401
import dns.asyncbackend  # noqa: F401
import encodings.idna  # noqa: F401 - ssl server_hostname
# dnspython loads each record type's module on first use (GenericRdata
# otherwise): the ones routing reads.
import dns.rdtypes.ANY.CNAME  # noqa: F401
import dns.rdtypes.ANY.MX  # noqa: F401
import dns.rdtypes.IN.A  # noqa: F401
import dns.rdtypes.IN.AAAA  # noqa: F401

from pfy import log
from pfy.daemons.smtp.agent import Agent
from pfy.dns import Resolver
from pfy.ipc.attr import ProtocolError
from pfy.ipc.channel import AsyncAttrConnection
from pfy.ipc.delivery import PROTOCOL, AgentSession, DeliveryRequest, check_request
from pfy.queue.queue_file import QueueFileReader
from pfy.server.lifecycle import Fatal
from pfy.tables import TableError, open_tables
from pfy.tls import TlsConfigError
from pfy.tls.client import ClientTls

__all__ = ["main", "setup", "serve_request"]


class _FirstMatch:
    """A maps parameter's tables (pfy.tables.search.Maps) as one lookup(key)
    -> value | None, first table that answers wins (Postfix's maps_find());
    TableTempFail passes through (the delivery is deferred)."""

    def __init__(self, maps):
        self.maps = maps

    def lookup(self, key: str) -> str | None:
        m = self.maps.find(key)
        return None if m is None else m.value


# Loaded in pre_jail, besides the imports above: modules that are imported
# lazily on first use, which after chroot would fail (or, for dnspython's
# record types, silently degrade to GenericRdata).
PRELOAD = (
    "concurrent.futures.thread",          # asyncio's getaddrinfo executor
    "dns._asyncio_backend", "dns.asyncbackend", "dns.asyncquery",
    "dns.rdtypes.ANY.CNAME", "dns.rdtypes.ANY.MX", "dns.rdtypes.ANY.SOA",   # SOA: NXDOMAIN
    "dns.rdtypes.ANY.NS", "dns.rdtypes.ANY.PTR", "dns.rdtypes.ANY.TXT",
    "dns.rdtypes.IN.A", "dns.rdtypes.IN.AAAA", "dns.rdtypes.ANY.TLSA",   # TLSA: DANE
    "dns.edns", "dns.flags",
    "encodings.idna",                      # ssl server_hostname, IDN MX names
    "asyncio.sslproto", "asyncio.unix_events",
)


def _preload() -> None:
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:     # an older dnspython without this module: not needed there
            pass


def setup(ctx) -> None:
    """pre_jail: everything the chroot will hide."""
    _preload()
    cfg = ctx.cfg
    lmtp = ctx.program == "lmtp"
    p = "lmtp" if lmtp else "smtp"
    tls = None
    level = (cfg[f"{p}_tls_security_level"] or "").strip().lower()
    policy_maps = None
    try:
        if cfg[f"{p}_tls_policy_maps"]:
            policy_maps = _FirstMatch(open_tables(cfg[f"{p}_tls_policy_maps"], cfg))
        sasl_maps = _FirstMatch(open_tables(cfg[f"{p}_sasl_password_maps"], cfg)) \
            if cfg[f"{p}_sasl_auth_enable"] and cfg[f"{p}_sasl_password_maps"] else None
    except TableError as err:
        raise Fatal(str(err)) from None
    if (level and level != "none") or policy_maps is not None \
            or cfg[f"{p}_use_tls"] or cfg[f"{p}_enforce_tls"]:
        try:
            tls = ClientTls(cfg, p)
            tls.preload([level or "may", "may", "encrypt"] +
                        (["verify"] if tls.ca_file or tls.ca_path else []))
        except TlsConfigError as err:
            raise Fatal(str(err)) from None
    resolver = Resolver.from_environment()
    if (cfg[f"{p}_dns_support_level"] or "").strip().lower() == "dnssec":
        resolver.enable_dnssec()         # DANE: believe the AD bit (pfy.dns)
    ctx.data["agent"] = Agent(cfg, lmtp, resolver=resolver, tls=tls, sasl_maps=sasl_maps,
                              policy_maps=policy_maps)


async def serve_request(ctx, reader, writer) -> None:
    """One qmgr connection: greet, read the request, deliver, reply."""
    agent = ctx.data["agent"]
    conn = AsyncAttrConnection(reader, writer)
    conn.greet(PROTOCOL)
    await conn.flush()
    try:
        async with asyncio.timeout(ctx.cfg.ipc_timeout or None):
            req = await conn.receive(DeliveryRequest)
        check_request(req)
    except (ProtocolError, EOFError, TimeoutError) as exc:
        log.warning(f"{agent.name}: bad delivery request: {exc}")
        return
    path = os.path.join(req.queue_name, req.queue_id)
    try:
        qf = QueueFileReader(path, writable=True, queue_id=req.queue_id)
    except OSError as exc:
        s = AgentSession(req, None, soft_bounce_on=ctx.cfg.soft_bounce)
        reply = s.finish("none", f"cannot open queue file: {exc.strerror}")
    else:
        with qf:
            reply = await agent.deliver(req, qf.fd)
    conn.send(reply)
    await conn.flush()


def main() -> None:
    from pfy.server import multi
    program = "lmtp" if os.path.basename(sys.argv[0] or "") == "lmtp" else "smtp"
    multi.serve(serve_request, pre_jail=setup, program=program)
