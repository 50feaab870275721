"""The server skeletons every daemon runs on (Postfix's single_server,
multi_server and trigger_server), and the contract with master.

    from pfy.server import single, multi, trigger
    from pfy.server.lifecycle import ServerContext, Fatal

See docs/INTERNALS.md, section pfy.server.
"""
