"""trivial-rewrite - Postfix address rewriting and resolving daemon.

SYNOPSIS
    trivial-rewrite [generic Postfix daemon options]

DESCRIPTION
    Serves two requests over the trivial_rewrite_protocol on
    private/rewrite, to many clients at once (multi skeleton):

    rewrite (rule, address)
        Rewrite an external-form address to standard form in the "local"
        context (myorigin, mydomain) or the "remote" context
        (remote_header_rewrite_domain): see rewrite.py.
    resolve (sender, address)
        Resolve an internal-form recipient to (transport, nexthop,
        recipient, flags), with the address class of ADDRESS_CLASS_README
        in the flags: see resolve.py.

    Resolve results are cached by the server for one second, so a burst of
    recipients in one domain costs one set of table lookups while a rebuilt
    table is still noticed at once; clients cache their last answer
    (pfy/ipc/rewrite_client.py).

SECURITY
    Not security-sensitive: it reads no mail and writes no files. It runs
    chrooted as mail_owner; it opens every table before the jail.

PARAMETERS
    myorigin, mydomain, myhostname, append_at_myorigin, append_dot_mydomain,
    swap_bangpath, allow_percent_hack, remote_header_rewrite_domain,
    mydestination, inet_interfaces, proxy_interfaces, virtual_alias_domains,
    virtual_mailbox_domains, relay_domains, parent_domain_matches_subdomains,
    local_transport, virtual_transport, relay_transport, default_transport,
    relayhost, transport_maps, sender_dependent_relayhost_maps,
    sender_dependent_default_transport_maps, relocated_maps,
    empty_address_recipient, resolve_dequoted_address, resolve_null_domain,
    show_user_unknown_table_name, recipient_delimiter (see postconf(5)).
"""

from __future__ import annotations

import time

from pfy.ipc.attr import ProtocolError
from pfy.ipc.channel import AsyncAttrConnection
from pfy.ipc.rewrite_client import (
    PROTOCOL, ResolveReply, ResolveRequest, RewriteReply, RewriteRequest,
)

from .resolve import FLAG_FAIL, Resolver, build_resolver
from .rewrite import Rewriter

__all__ = ["main", "serve_client", "RewriteService"]

# Server-side cache: one second matches the table layer's change check
# (pfy/tables/_base.py FileWatch.CHECK_INTERVAL), so caching never hides a
# rebuilt table for longer than the tables themselves do.
CACHE_TTL = 1.0
CACHE_MAX = 10000


class RewriteService:
    """The request logic apart from I/O: request object in, reply out."""

    def __init__(self, rewriter: Rewriter, resolver: Resolver, clock=time.monotonic,
                 sender_matters: bool = True, log=None):
        self.rewriter = rewriter
        self.resolver = resolver
        self.clock = clock
        self.sender_matters = sender_matters
        self.log = log
        self._cache: dict[tuple[str, str], ResolveReply] = {}
        self._cache_expire = 0.0

    def handle(self, request):
        if isinstance(request, RewriteRequest):
            try:
                return RewriteReply(0, self.rewriter.rewrite(request.rule, request.address))
            except KeyError:
                if self.log:
                    self.log.warning(f"unknown context: {request.rule}")
                return RewriteReply(FLAG_FAIL, request.address)
        now = self.clock()
        if now >= self._cache_expire or len(self._cache) >= CACHE_MAX:
            self._cache.clear()
            self._cache_expire = now + CACHE_TTL
        # Only the sender-dependent maps look at the sender.
        key = (request.sender if self.sender_matters else "", request.address)
        reply = self._cache.get(key)
        if reply is None:
            r = self.resolver.resolve(request.sender, request.address)
            reply = ResolveReply(r.flags, r.transport, r.nexthop, r.recipient)
            if not r.flags & FLAG_FAIL:
                self._cache[key] = reply
        return reply


async def serve_client(service: RewriteService, reader, writer, log=None) -> None:
    conn = AsyncAttrConnection(reader, writer)
    conn.greet(PROTOCOL)
    await conn.flush()
    while True:
        try:
            request = await conn.receive((RewriteRequest, ResolveRequest))
        except EOFError:
            return
        except ProtocolError as err:
            if log:
                log.warning(f"trivial-rewrite: bad request: {err}")
            return
        conn.send(service.handle(request))
        await conn.flush()


def main() -> None:
    from pfy.log import logger
    from pfy.server import multi
    from pfy.server.lifecycle import Fatal
    from pfy.tables import TableError, open_table

    def pre_jail(ctx) -> None:
        cfg = ctx.cfg
        tables: dict[str, object] = {}

        def opener(spec: str):
            if spec not in tables:
                tables[spec] = open_table(spec, cfg)
            return tables[spec]
        try:
            resolver = build_resolver(cfg, opener, warn=logger.warning)
        except TableError as err:
            raise Fatal(str(err)) from None
        ctx.data["service"] = RewriteService(
            resolver.rewriter, resolver,
            sender_matters=bool(cfg.sender_dependent_relayhost_maps
                                or cfg.sender_dependent_default_transport_maps),
            log=logger)

    async def session(ctx, reader, writer) -> None:
        await serve_client(ctx.data["service"], reader, writer, log=logger)

    multi.serve(session, pre_jail=pre_jail)
