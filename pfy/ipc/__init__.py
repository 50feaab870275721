"""Between processes: the attribute protocol (attr.py: codec, channel.py:
blocking and asyncio connections), FIFO and unix-socket triggers
(trigger.py), and the small clients of each service (NAME_client.py).
INTERNALS.md "pfy.ipc" describes the interfaces.
"""
