"""The qmgr scheduler: who gets the next delivery agent, pure logic.

No sockets, no files, no clock of its own: qmgr feeds it recipients and
delivery outcomes and asks for the next delivery.  Postfix's rules
(SCHEDULER_README, qmgr(8), postconf(5)):

- A *queue* is one destination of one transport: the nexthop, or the
  recipient itself when the transport's destination recipient limit is 1
  ("with a per-destination recipient limit > 1, a destination is a domain,
  otherwise it is a recipient").
- Each queue has a concurrency *window*: it starts at
  initial_destination_concurrency and never exceeds
  transport_destination_concurrency_limit.
- Positive feedback after a delivery without connection/handshake failure:
  success += feedback; each whole unit grows the window by one (default
  feedback 1: +1 per delivery, i.e. the window doubles per good cohort).
- Negative feedback after a destination-level failure: the window shrinks
  by one per unit (not below 1) and the failed pseudo-cohort count grows by
  1/window; at transport_destination_concurrency_failed_cohort_limit the
  destination is *dead*: its pending deliveries are handed back to be
  deferred and it gets none until the retry time (qmgr_queue_throttle()).
- Recipients per delivery: transport_destination_recipient_limit.
- Fairness: destinations of a transport take turns (round robin), and
  transports take turns, so a slow destination holds only its own window.
- A transport never has more deliveries in flight than its agent's process
  limit (master.cf maxproc, else default_process_limit).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable

__all__ = ["TransportLimits", "Delivery", "Scheduler", "parse_feedback"]


def parse_feedback(value: Any) -> tuple[float, bool]:
    """postconf(5) feedback forms: "1", "1/2", "1/concurrency".

    Returns (amount, per_concurrency): the feedback is amount/window when
    per_concurrency is true.  Values outside 0..1 are clamped, as Postfix's
    qmgr_feedback_init() warns and clamps.
    """
    text = str(value).replace(" ", "").lower()
    per = False
    if "/" in text:
        num, den = text.split("/", 1)
        if den == "concurrency":
            per, amount = True, float(num)
        else:
            amount = float(Fraction(int(num), int(den)))
    else:
        amount = float(text)
    return min(1.0, max(0.0, amount)), per


@dataclass(frozen=True)
class TransportLimits:
    name: str
    dest_concurrency_limit: int = 20      # default_destination_concurrency_limit
    initial_concurrency: int = 5          # initial_destination_concurrency
    recipient_limit: int = 50             # default_destination_recipient_limit
    failed_cohort_limit: int = 1          # default_destination_concurrency_failed_cohort_limit
    positive_feedback: tuple[float, bool] = (1.0, False)
    negative_feedback: tuple[float, bool] = (1.0, False)
    process_limit: int = 100              # master.cf maxproc / default_process_limit
    dead_retry: float = 300.0             # minimal_backoff_time: when a dead queue is retried

    @classmethod
    def from_config(cls, cfg, transport: str, process_limit: int | None = None) -> "TransportLimits":
        tp = cfg.transport_param
        def fb(suffix):
            try:
                return parse_feedback(tp(transport, suffix))
            except (ValueError, ZeroDivisionError):
                return (1.0, False)
        return cls(
            name=transport,
            dest_concurrency_limit=int(tp(transport, "destination_concurrency_limit")),
            initial_concurrency=int(_transport_initial(cfg, transport)),
            recipient_limit=int(tp(transport, "destination_recipient_limit")),
            failed_cohort_limit=int(tp(transport, "destination_concurrency_failed_cohort_limit")),
            positive_feedback=fb("destination_concurrency_positive_feedback"),
            negative_feedback=fb("destination_concurrency_negative_feedback"),
            process_limit=process_limit or cfg.default_process_limit,
            dead_retry=float(cfg.minimal_backoff_time),
        )


def _transport_initial(cfg, transport: str):
    # The per-transport form is transport_initial_destination_concurrency
    # (postconf(5)), not transport_<suffix> of a default_ name.
    try:
        raw = cfg.raw(f"{transport}_initial_destination_concurrency")
    except KeyError:
        raw = None
    if raw:
        return cfg.expand(raw)
    return cfg.initial_destination_concurrency


@dataclass
class Delivery:
    """One delivery request's worth: one message, one queue, some recipients."""
    id: int
    transport: str
    nexthop: str
    queue_key: str
    message: Any                    # the caller's message handle
    recipients: list                # the caller's recipient objects


@dataclass
class _Queue:
    key: str
    nexthop: str
    window: int
    busy: int = 0
    success: float = 0.0
    failure: float = 0.0
    fail_cohorts: float = 0.0
    dead_until: float | None = None
    dead_reason: tuple[str, str] = ("", "")
    todo: deque = field(default_factory=deque)   # (message, [recipients])


class _Transport:
    def __init__(self, limits: TransportLimits):
        self.limits = limits
        self.busy = 0
        self.queues: OrderedDict[str, _Queue] = OrderedDict()


class Scheduler:
    def __init__(self, limits_for: Callable[[str], TransportLimits]):
        self._limits_for = limits_for
        self._transports: OrderedDict[str, _Transport] = OrderedDict()
        self._ids = itertools.count(1)
        self._in_flight: dict[int, Delivery] = {}

    # -- feeding -------------------------------------------------------------
    def _transport(self, name: str) -> _Transport:
        t = self._transports.get(name)
        if t is None:
            t = self._transports[name] = _Transport(self._limits_for(name))
        return t

    def queue_key(self, transport: str, nexthop: str, address: str) -> str:
        """The destination a recipient belongs to (see the module docstring)."""
        if self._transport(transport).limits.recipient_limit == 1:
            return address.lower() + "@" + nexthop.lower()
        return nexthop.lower()

    def add(self, message: Any, transport: str, nexthop: str,
            recipients: Iterable[tuple[str, Any]], now: float) -> list[tuple[Any, list, tuple[str, str]]]:
        """Queue a message's recipients for one transport/nexthop.

        recipients: (address, handle) pairs.  Returns the (message,
        handles, (dsn, reason)) groups that went to a dead destination and
        must be deferred at once, as Postfix defers mail for a dead site.
        """
        t = self._transport(transport)
        limit = max(1, t.limits.recipient_limit)
        groups: OrderedDict[str, list] = OrderedDict()
        for address, handle in recipients:
            groups.setdefault(self.queue_key(transport, nexthop, address), []).append(handle)
        refused = []
        for key, handles in groups.items():
            q = t.queues.get(key)
            if q is None:
                window = max(1, min(t.limits.initial_concurrency, t.limits.dest_concurrency_limit))
                q = t.queues[key] = _Queue(key, nexthop, window)
            if self._is_dead(q, now):
                refused.append((message, handles, q.dead_reason))
                continue
            for i in range(0, len(handles), limit):
                q.todo.append((message, handles[i:i + limit]))
        return refused

    # -- choosing --------------------------------------------------------------
    def _is_dead(self, q: _Queue, now: float) -> bool:
        if q.dead_until is None:
            return False
        if now >= q.dead_until:
            # qmgr_queue_unthrottle_wrapper(): back to life with window 1...
            q.dead_until = None
            q.window = 1
            q.fail_cohorts = 0.0
            return False
        return True

    def next_delivery(self, now: float) -> Delivery | None:
        """The next delivery to start, or None when every window is full."""
        for _ in range(len(self._transports)):
            name, t = next(iter(self._transports.items()))
            self._transports.move_to_end(name)      # transports take turns
            if t.busy >= t.limits.process_limit:
                continue
            for key in list(t.queues):
                q = t.queues[key]
                if not q.todo or q.busy >= q.window or self._is_dead(q, now):
                    continue
                t.queues.move_to_end(key)           # destinations take turns
                message, handles = q.todo.popleft()
                q.busy += 1
                t.busy += 1
                d = Delivery(next(self._ids), name, q.nexthop, key, message, handles)
                self._in_flight[d.id] = d
                return d
        return None

    # -- outcomes ------------------------------------------------------------
    def done(self, delivery: Delivery, now: float, throttle: tuple[str, str] | None = None,
             ) -> list[tuple[Any, list, tuple[str, str]]]:
        """A delivery finished.  throttle: (dsn, reason) of a destination-level
        failure, None otherwise.  Returns groups to defer (a destination just
        declared dead gives back everything it had waiting)."""
        if self._in_flight.pop(delivery.id, None) is None:
            return []
        t = self._transports[delivery.transport]
        t.busy -= 1
        q = t.queues.get(delivery.queue_key)
        if q is None:
            return []
        q.busy -= 1
        refused: list = []
        if throttle is None:
            self._positive(t.limits, q)
        else:
            refused = self._negative(t.limits, q, throttle, now)
        if not q.todo and not q.busy and q.dead_until is None:
            del t.queues[q.key]                    # forget idle destinations
        return refused

    def _amount(self, fb: tuple[float, bool], window: int) -> float:
        amount, per = fb
        return amount / max(1, window) if per else amount

    def _positive(self, limits: TransportLimits, q: _Queue) -> None:
        q.fail_cohorts = 0.0
        if q.window >= limits.dest_concurrency_limit:
            return
        q.success += self._amount(limits.positive_feedback, q.window)
        while q.success >= 1 and q.window < limits.dest_concurrency_limit:
            q.window += 1
            q.success -= 1
            q.failure = 0.0

    def _negative(self, limits: TransportLimits, q: _Queue, why: tuple[str, str],
                  now: float) -> list:
        q.failure -= self._amount(limits.negative_feedback, q.window)
        while q.failure < 0:
            q.window -= 1
            q.failure += 1
            q.success = 0.0
        q.window = max(1, q.window)
        q.fail_cohorts += 1.0 / q.window
        limit = limits.failed_cohort_limit
        if limit > 0 and q.fail_cohorts >= limit:
            q.dead_until = now + limits.dead_retry
            q.dead_reason = why
            refused = [(m, h, why) for m, h in q.todo]
            q.todo.clear()
            return refused
        return []

    def flush_dead(self, nexthop: str | None = None) -> None:
        """QMGR_REQ_FLUSH_DEAD ("postqueue -f"): forget dead destinations;
        only those whose nexthop is ``nexthop`` when given (postqueue -s)."""
        for t in self._transports.values():
            for q in t.queues.values():
                if nexthop is not None and q.nexthop.lower() != nexthop.lower():
                    continue
                q.dead_until = None
                q.fail_cohorts = 0.0
                q.window = max(q.window, 1)

    def drop_message(self, message: Any) -> None:
        """Forget pending work of a message (it left the active queue)."""
        for t in self._transports.values():
            for q in t.queues.values():
                if any(m is message for m, _ in q.todo):
                    q.todo = deque((m, h) for m, h in q.todo if m is not message)

    # -- introspection (tests, logs) ----------------------------------------
    def window(self, transport: str, key: str) -> int | None:
        t = self._transports.get(transport)
        q = t.queues.get(key) if t else None
        return q.window if q else None

    def is_dead(self, transport: str, key: str, now: float) -> bool:
        t = self._transports.get(transport)
        q = t.queues.get(key) if t else None
        return bool(q and self._is_dead(q, now))

    def next_wakeup(self) -> float | None:
        """When the earliest dead destination comes back (for a timer)."""
        times = [q.dead_until for t in self._transports.values()
                 for q in t.queues.values() if q.dead_until is not None and q.todo]
        return min(times) if times else None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def pending(self) -> int:
        return sum(len(q.todo) for t in self._transports.values() for q in t.queues.values())
