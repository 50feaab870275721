"""TLS for pfy's servers: contexts from main.cf, Postfix's log lines and
Received comments, client-certificate fingerprints, and new certificates.

    from pfy.tls import server_context, TlsSettings, TlsInfo, tls_info
    ctx = server_context(TlsSettings.from_config(cfg, "smtpd"), mandatory=False)
    info = tls_info(ssl_object, ask_ccert=..., digest="sha256")
    info.log_line("Anonymous", "host[addr]")

Everything that reads a file (keys, certificates, CA files) happens when the
context is built, which daemons do before chroot.
"""

# cryptography parses client certificates after the handshake, inside the
# chroot: load it now.
import cryptography.x509  # noqa: F401,E402
import cryptography.hazmat.primitives.serialization  # noqa: F401,E402

from pfy.tls.context import (TlsConfigError, TlsSettings, cipher_list,
                             protocol_range, server_context)
from pfy.tls.info import TlsInfo, fingerprint, tls_info

__all__ = ["TlsConfigError", "TlsSettings", "server_context", "cipher_list",
           "protocol_range", "TlsInfo", "tls_info", "fingerprint"]
