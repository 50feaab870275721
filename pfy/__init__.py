"""pfy - a mail transfer agent in Python, built the way Postfix is built.

DESIGN.md (in shared/) is the map; each sub-package is one concern:
config, tables, smtp, queue, ipc, server, daemons, cli.
"""

__version__ = "0.1.0"
