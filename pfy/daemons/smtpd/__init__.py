"""smtpd - Postfix-compatible SMTP server.

SYNOPSIS
    smtpd [generic Postfix daemon options]      (started by master)
    smtpd -S                                     (stand-alone: sendmail -bs)

DESCRIPTION
    Receives mail over ESMTP (RFC 5321) on the endpoints master.cf gives it
    (smtp on 25, submission on 587, submissions in TLS wrapper mode on 465)
    and hands each message to cleanup(8), record by record, answering
    "250 2.0.0 Ok: queued as ID" only after cleanup has fsynced the queue
    file. One process serves many sessions (asyncio); master adds processes
    up to the service's maxproc. The protocol core is pfy.smtp.server; the
    driver is session.py; access control is pfy.access.

SECURITY
    Talks to anyone on the network: the most exposed process. Runs
    chrooted as mail_owner (master.cf), opens its tables, certificates and
    resolver configuration before the chroot, writes no files, and never
    puts exception text on the wire.

ENVIRONMENT
    PFY_RESOLV_CONF  resolv.conf(5) file for client hostname lookups instead
                     of /etc/resolv.conf and /etc/hosts (see pfy.dns)

PARAMETERS
    smtpd_banner, smtpd_timeout, smtpd_*_limit, smtpd_tls_*, smtpd_sasl_*,
    smtpd_authorized_xclient_hosts, smtpd_authorized_xforward_hosts,
    local_header_rewrite_clients, smtpd_peername_lookup, content_filter,
    receive_override_options,
    smtpd_client_port_logging, and the restriction lists (postconf(5)).
"""

from __future__ import annotations

import dataclasses

__all__ = ["main", "limits_from_config"]


def limits_from_config(cfg):
    from pfy.smtp.server import SmtpdLimits
    kw = {}
    for f in dataclasses.fields(SmtpdLimits):
        try:
            value = cfg[f.name]
        except KeyError:
            continue
        default = f.default
        if isinstance(default, bool):
            value = value if isinstance(value, bool) else str(value).lower() in ("yes", "true", "1")
        elif isinstance(default, int):
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        elif isinstance(default, frozenset):
            if isinstance(value, str):
                value = value.replace(",", " ").split()
            words = [v for v in value if ":" not in v]
            if f.name in ("smtpd_noop_commands", "smtpd_forbidden_commands"):
                words = [w.upper() for w in words]
            value = frozenset(words)
        kw[f.name] = value
    return SmtpdLimits(**kw)


def _pre_jail(ctx) -> None:
    import os

    from pfy.daemons.smtpd._hostlist import HostList
    from pfy.daemons.smtpd._policy import load_policy
    from pfy.daemons.smtpd.session import Service
    from pfy.server.lifecycle import Fatal
    from pfy.tables import TableError, open_table

    cfg = ctx.cfg
    standalone = bool(ctx.options.standalone)
    if standalone:
        _fatal_on_stderr()
        # Messages go to maildrop/ (session.py open_cleanup), and pickup
        # is woken through pfy.ipc.trigger when it is a socket.
        import pfy.cli.postdrop  # noqa: F401
    import pfy.ipc.trigger  # noqa: F401  (ETRN, pickup wake-up; loaded before the jail)
    tables: dict = {}

    def opener(spec):
        if spec not in tables:
            tables[spec] = open_table(spec, cfg)
        return tables[spec]

    try:
        limits = limits_from_config(cfg)
    except ValueError as err:
        raise Fatal(f"{cfg.config_directory}/main.cf: {err}") from None

    tls = tls_ctx = None
    if not standalone:
        from pfy.tls import TlsConfigError, TlsSettings, server_context
        try:
            tls = TlsSettings.from_config(cfg, "smtpd")
            if tls.enabled:
                tls_ctx = server_context(tls)
        except TlsConfigError as err:
            if tls is not None and (tls.mandatory or tls.wrappermode):
                raise Fatal(f"{err}: TLS can't be enabled") from None
            # Postfix: "No server certs available. TLS won't be enabled".
            from pfy.log import logger
            logger.warning(f"{err}: TLS won't be enabled")
            tls_ctx = None

    resolver = hosts = None
    if not standalone:
        from pfy.dns import RESOLV_CONF_ENV, Resolver
        resolver = Resolver.from_environment()
        if not os.environ.get(RESOLV_CONF_ENV):
            from pfy.daemons.smtpd._hosts import HostsFile
            hosts = HostsFile()

    # Service endpoints relative to the cwd, which is queue_directory
    # inside the chroot and out of it.
    rewrite = None

    def get_rewrite():
        nonlocal rewrite
        if rewrite is None:
            from pfy.ipc.rewrite_client import RewriteClient
            rewrite = RewriteClient(os.path.join("private", cfg.rewrite_service_name))
        return rewrite

    async def resolve(sender, rcpt):
        import asyncio
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, get_rewrite().resolve, sender, rcpt)
        except Exception:   # noqa: BLE001 - trivial-rewrite away: try again later
            return None

    try:
        mynetworks = HostList(cfg.mynetworks, opener)
        policy = load_policy(cfg, mynetworks=mynetworks, resolve=resolve,
                             rewrite=None if standalone else get_rewrite(), resolver=resolver)
        xclient = HostList(cfg.smtpd_authorized_xclient_hosts, opener)
        xforward = HostList(cfg.smtpd_authorized_xforward_hosts, opener)
    except (TableError, ValueError) as err:
        raise Fatal(str(err)) from None
    ctx.at_exit(policy.close)

    local_rewrite = _local_rewrite_check(cfg, mynetworks, opener)

    from pfy.message.domains import MatchList
    from pfy.tables.search import parent_style
    try:
        fast_flush = MatchList(cfg.fast_flush_domains, opener, domain=True,
                               parent=parent_style(cfg.parent_domain_matches_subdomains,
                                                   "fast_flush_domains"))
    except (TableError, ValueError) as err:
        raise Fatal(str(err)) from None

    sasl_factory = None
    if cfg.smtpd_sasl_auth_enable and not standalone:
        sasl_factory = _sasl_factory(cfg)

    rates = None
    if not standalone:
        # anvil(8) rate limits; smtpd.c creates the client only when a
        # limit is set, and a client in the exceptions list is never limited.
        from pfy.ipc.anvil_client import AnvilClient, RateLimits
        try:
            exceptions = HostList(cfg.smtpd_client_event_limit_exceptions, opener)
        except (TableError, ValueError) as err:
            raise Fatal(str(err)) from None
        rates = RateLimits.from_config(cfg, AnvilClient(os.path.join("private", "anvil")),
                                       service=ctx.service, exceptions=exceptions)
        if not rates.enabled:
            rates = None

    # receive_override_options (Postfix input_transp.c): what cleanup
    # skips, e.g. no_address_mappings before a content filter.
    from pfy.ipc.cleanup_client import input_flags
    ctx.data["service"] = Service(
        cfg=cfg, limits=limits, policy=policy,
        cleanup_path=os.path.join("public", cfg.cleanup_service_name),
        cleanup_flags=input_flags(cfg.receive_override_options),
        content_filter=cfg.content_filter or "", resolver=resolver, hosts=hosts, tls=tls, tls_ctx=tls_ctx,
        xclient_hosts=xclient, xforward_hosts=xforward, local_rewrite=local_rewrite,
        sasl_factory=sasl_factory, standalone=standalone,
        peername_lookup=bool(cfg.smtpd_peername_lookup),
        client_port_logging=bool(cfg.smtpd_client_port_logging),
        sasl_enable=bool(cfg.smtpd_sasl_auth_enable),
        sasl_auth_header=bool(cfg.smtpd_sasl_authenticated_header),
        myhostname=cfg.myhostname, mail_name=cfg.mail_name, service=ctx.service,
        fast_flush=fast_flush, qmgr_path=os.path.join("public", cfg.queue_service_name),
        anvil=rates)


def _fatal_on_stderr() -> None:
    """smtpd -S runs behind sendmail -bs for a user at a terminal or a
    program: a fatal or panic reason must reach its stderr, not only the
    log the user may not be able to read."""
    import sys

    from pfy.log import logger, printable
    log = logger.log

    def log_and_tell(severity: str, text: str) -> None:
        log(severity, text)
        if severity in ("fatal", "panic") and not logger.echoes_to_stderr:
            try:
                sys.stderr.write(f"{logger.process_name}: {severity}: {printable(text)}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
    logger.log = log_and_tell


def _local_rewrite_check(cfg, mynetworks, opener):
    """local_header_rewrite_clients (postconf(5)): permit_inet_interfaces,
    permit_mynetworks, permit_sasl_authenticated, permit_tls_clientcerts /
    permit_tls_all_clientcerts, check_address_map type:table, static:all."""
    from pfy.daemons.smtpd._hostlist import HostList
    words = cfg.local_header_rewrite_clients
    if isinstance(words, str):
        words = words.replace(",", " ").split()
    checks = []
    it = iter(words)
    for w in it:
        lw = w.lower()
        if lw == "permit_inet_interfaces":
            from pfy.message.domains import is_own_address
            checks.append(lambda s: is_own_address(s.client_addr))
        elif lw == "permit_mynetworks":
            checks.append(lambda s: mynetworks.match(s.client_name, s.client_addr))
        elif lw == "permit_sasl_authenticated":
            checks.append(lambda s: bool(s.sasl_username))
        elif lw in ("permit_tls_clientcerts", "permit_tls_all_clientcerts"):
            checks.append(lambda s: bool(s.tls_info and s.tls_info.peer_trusted))
        elif lw == "check_address_map":
            spec = next(it, "")
            if spec:
                hl = HostList([spec], opener)
                checks.append(lambda s, hl=hl: hl.match(s.client_name, s.client_addr))
        elif lw == "static:all":
            checks.append(lambda s: True)

    def check(session) -> bool:
        if session.svc.standalone:
            return True
        return any(c(session) for c in checks)
    return check


def _sasl_factory(cfg):
    """pfy.sasl's factory (docs/INTERNALS.md "pfy.sasl and anvil")."""
    from pfy.server.lifecycle import Fatal
    try:
        from pfy.sasl import SaslConfigError, SaslServerFactory
    except ImportError:
        from pfy.log import logger
        logger.warning("smtpd_sasl_auth_enable = yes but no SASL support is installed")
        return None
    try:
        return SaslServerFactory.from_config(cfg)
    except SaslConfigError as err:
        raise Fatal(str(err)) from None


async def _session(ctx, reader, writer) -> None:
    from pfy.daemons.smtpd.session import Session
    await Session(ctx.data["service"], reader, writer).run()


def main() -> None:
    from pfy.server import multi
    multi.serve(_session, pre_jail=_pre_jail)
