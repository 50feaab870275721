"""Defaults that Postfix computes at run time, computed the same way here.

See params.DYNAMIC for the list.  lookup(name) returns the effective raw
value of another parameter (set or default), expanded, for the ones that
depend on each other (myhostname <-> mydomain, mynetworks_style).
"""

import os
import sys

__all__ = ["dynamic_default"]

# mail_params.h DEF_MYDOMAIN: the domain when the host name has no dot.
DEF_MYDOMAIN = "localdomain"


def dynamic_default(name: str, lookup) -> str:
    return _FUNCS[name](lookup)


def gethostname() -> str:
    """socket.gethostname() without importing socket: on Linux both read
    uname(2)'s nodename, and postconf's start-up time counts."""
    return os.uname().nodename


def _myhostname(lookup) -> str:
    # mail_params.c check_myhostname(): the host name, made fully qualified
    # with $mydomain (if set in main.cf) or "localdomain".
    host = gethostname()
    if "." not in host:
        host += "." + (lookup("mydomain", set_only=True) or DEF_MYDOMAIN)
    return host


def _mydomain(lookup) -> str:
    # mail_params.c check_mydomainname(): $myhostname minus its first label.
    host = lookup("myhostname") or ""
    dot = host.find(".")
    return host[dot + 1:] if dot >= 0 and host[dot + 1:] else DEF_MYDOMAIN


def _install_root() -> str:
    import pfy
    return os.path.dirname(os.path.dirname(os.path.abspath(pfy.__file__)))


def _daemon_directory(lookup) -> str:
    # DESIGN.md: the daemons live in libexec/; a source checkout (editable
    # install) has it next to the package, an installed wheel under
    # sys.prefix/libexec/pfy.
    candidates = [os.path.join(_install_root(), "libexec"),
                  os.path.join(sys.prefix, "libexec", "pfy")]
    for path in candidates:
        if os.path.isdir(path):
            return path
    return candidates[-1]


def _command_directory(lookup) -> str:
    # Where pip put the console scripts of this environment.
    import sysconfig
    return sysconfig.get_path("scripts")


def _command(cmd: str):
    return lambda lookup: os.path.join(lookup("command_directory") or "", cmd)


def _mail_version(lookup) -> str:
    import pfy
    return getattr(pfy, "__version__", "0.1.0")


def _mynetworks(lookup) -> str:
    from pfy.config._interfaces import mynetworks
    return mynetworks(lookup("mynetworks_style") or "host",
                      lookup("inet_protocols") or "all")


_FUNCS = {
    "myhostname": _myhostname,
    "mydomain": _mydomain,
    "mynetworks": _mynetworks,
    "daemon_directory": _daemon_directory,
    "command_directory": _command_directory,
    "sendmail_path": _command("sendmail"),
    "newaliases_path": _command("newaliases"),
    "mailq_path": _command("mailq"),
    "mail_version": _mail_version,
    "process_id": lambda lookup: str(os.getpid()),
    "process_name": lambda lookup: os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python3",
}
