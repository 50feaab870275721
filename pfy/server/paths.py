"""Where the installed daemons and the shipped master.cf live.

Two layouts, tried in this order:

- a source checkout (also an editable install): <checkout>/libexec and
  <checkout>/master.cf beside the pfy/ package;
- `pip install .`: pyproject.toml installs libexec/* as data files into
  <prefix>/libexec/pfy and master.cf, main.cf into <prefix>/share/pfy, where
  <prefix> is sys.prefix (the virtualenv, or /usr/local).

This module is imported by pfy.config for the defaults of daemon_directory
(and of the shipped master.cf), so it stays import-light: os and sys only.
"""

from __future__ import annotations

import os
import sys

__all__ = ["default_daemon_directory", "shipped_file", "daemon_argv"]

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _checkout_has(name: str) -> bool:
    # pyproject.toml tells a checkout from site-packages' parent folder.
    return (os.path.exists(os.path.join(_CHECKOUT, "pyproject.toml"))
            and os.path.exists(os.path.join(_CHECKOUT, name)))


def default_daemon_directory() -> str:
    """The folder holding the daemon executables (libexec/master, ...)."""
    if _checkout_has("libexec"):
        return os.path.join(_CHECKOUT, "libexec")
    return os.path.join(sys.prefix, "libexec", "pfy")


def shipped_file(name: str) -> str:
    """Path of a shipped default file ("master.cf", "main.cf")."""
    if _checkout_has(name):
        return os.path.join(_CHECKOUT, name)
    return os.path.join(sys.prefix, "share", "pfy", name)


def daemon_argv(path: str) -> tuple[str, list[str]]:
    """(executable, argv prefix) that runs the daemon file at `path`.

    A Python script runs under the interpreter that runs master (whatever its
    #! line says, so a virtualenv's daemons use the virtualenv's modules); any
    other executable runs as itself.
    """
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return path, [path]
    if first.startswith(b"#!") and b"python" in first:
        return sys.executable, [sys.executable, path]
    return path, [path]
