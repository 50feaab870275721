"""In-process connection cache (smtp(8) "CONNECTION CACHE").

Postfix keeps idle SMTP sessions in the scache(8) daemon so that any smtp
process may reuse them.  pfy's smtp agent is a multi-server: one process
serves many deliveries at once, so an in-process cache reaches the same
reuse without passing file descriptors (and TLS state, which Postfix must
renegotiate after a hand-over) between processes.  When master starts a
second smtp process (maxproc), each has its own cache; reuse is then per
process, the price of keeping TLS sessions alive with their socket.

Rules (postconf(5)):
    smtp_connection_cache_time_limit   an idle session is closed after this
    smtp_connection_reuse_time_limit   a session older than this is not reused
    smtp_connection_cache_on_demand    cache every session (qmgr sends no
                                       backlog hint here; see smtp(8))
    smtp_connection_cache_destinations always cache for these next hops
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

__all__ = ["ConnectionCache"]

# Postfix scache's per-destination bound is implicit (one per endpoint per
# qmgr concurrency slot); bound ours to the default destination concurrency
# limit (20) so a burst cannot park unbounded sockets.
MAX_IDLE_PER_KEY = 20


class ConnectionCache:
    def __init__(self, idle_limit: float, reuse_limit: float,
                 close: Callable[[object], "asyncio.Future | None"],
                 clock: Callable[[], float] = time.monotonic):
        self.idle_limit = idle_limit
        self.reuse_limit = reuse_limit
        self._close = close
        self._clock = clock
        self._idle: dict[object, list[tuple[object, asyncio.TimerHandle | None]]] = {}

    def put(self, key, session) -> None:
        if self.idle_limit <= 0 or self._clock() - session.created >= self.reuse_limit:
            self._spawn_close(session)
            return
        lst = self._idle.setdefault(key, [])
        if len(lst) >= MAX_IDLE_PER_KEY:
            self._spawn_close(session)
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.idle_limit, self._expire, key, session)
        lst.append((session, timer))

    def _expire(self, key, session) -> None:
        lst = self._idle.get(key, [])
        for i, (s, _) in enumerate(lst):
            if s is session:
                del lst[i]
                break
        if not lst:
            self._idle.pop(key, None)
        self._spawn_close(session)

    def get(self, key):
        lst = self._idle.get(key)
        while lst:
            session, timer = lst.pop()
            if timer is not None:
                timer.cancel()
            if not lst:
                self._idle.pop(key, None)
            if session.usable(self._clock(), self.reuse_limit):
                return session
            self._spawn_close(session)
        return None

    def _spawn_close(self, session) -> None:
        coro = self._close(session)
        if coro is not None:
            task = asyncio.get_running_loop().create_task(coro)
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)

    def close_all(self) -> None:
        for key in list(self._idle):
            for session, timer in self._idle.pop(key):
                if timer is not None:
                    timer.cancel()
                self._spawn_close(session)

    def __len__(self) -> int:
        return sum(len(v) for v in self._idle.values())


_tasks: set = set()
