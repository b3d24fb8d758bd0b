"""The hand-over between capture threads and the inference loop: the pure
:class:`~edgevit.stream.batcher.Batcher` under one lock, with the waiting done here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from edgevit.stream.batcher import Batcher

POLL_S = 0.05  # longest a blocked producer waits without checking whether the inbox closed


class Inbox:
    """Thread-safe queues of frames and the batcher that drains them.

    Args:
        batcher: decides the batches.
        clock: monotonic seconds (injected by tests).
    """

    def __init__(self, batcher: Batcher, clock: Callable[[], float] = time.monotonic):
        self.batcher = batcher
        self.clock = clock
        self.cond = threading.Condition(threading.Lock())
        self.closed = False
        self.takers = 0  # threads waiting in take(): a put wakes them only if there are any

    def add(self, capacity: int, live: bool) -> int:
        with self.cond:
            return self.batcher.add(capacity, live)

    def put(self, sid: int, items: Sequence[Any]) -> int:
        """Queue frames of one source; returns how many stale frames they pushed out (live
        sources). A file source's producer waits here while its queue is full; it hands
        frames over in chunks: one lock and at most one wake-up per chunk, not per frame."""
        with self.cond:
            b = self.batcher
            if not b.sources[sid].live:
                while b.room(sid) == 0 and not self.closed:
                    self.cond.wait(POLL_S)
            if self.closed:
                return 0
            dropped = b.put(sid, items, self.clock())
            if self.takers:
                self.cond.notify_all()
            return dropped

    def finish(self, sid: int) -> None:
        with self.cond:
            self.batcher.finish(sid)
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def exhausted(self) -> bool:
        with self.cond:
            return self.batcher.exhausted

    def take(self, idle_s: float) -> list[Any]:
        """The next batch; ``[]`` if no frame came within ``idle_s`` (so the caller can check
        for stops and stalls), the inbox closed, or every source is done."""
        with self.cond:
            b = self.batcher
            end = self.clock() + idle_s
            while True:
                now = self.clock()
                batch, wake = b.poll(now)
                if batch is not None:
                    if b.refill_wanted():
                        self.cond.notify_all()
                    return batch
                if self.closed:
                    return []
                if wake is None:  # nothing queued
                    if b.exhausted or now >= end:
                        return []
                    wake = end
                self._wait(wake - now)

    def _wait(self, timeout: float) -> None:
        self.takers += 1
        try:
            self.cond.wait(max(0.0, timeout))
        finally:
            self.takers -= 1
