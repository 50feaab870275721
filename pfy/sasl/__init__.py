"""pfy.sasl - the SMTP server's SASL authentication (smtpd_sasl_*).

See docs/INTERNALS.md "pfy.sasl and anvil" for the interface, SASL_README
for the administrator's view.  Backends: Dovecot's auth service
(smtpd_sasl_type = dovecot) and a built-in LMDB table of scrypt hashes
(smtpd_sasl_type = pfy, managed with pfy-saslpasswd(1)).
"""

from pfy.sasl.server import (Challenge, Failure, SaslConfigError, SaslServer,
                             SaslServerFactory, Success, auth_failed, auth_temp_failed,
                             default_user_table)

__all__ = ["SaslServerFactory", "SaslServer", "Challenge", "Success", "Failure",
           "SaslConfigError", "auth_failed", "auth_temp_failed", "default_user_table"]
