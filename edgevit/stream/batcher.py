"""The micro-batcher: which queued frames make the next inference batch, and how long to
wait for more. Pure code: no threads and no clock of its own (every call is given ``now``),
so its decisions are unit-tested without sleeping; :class:`edgevit.stream.inbox.Inbox`
runs it under a lock between the capture threads and the inference loop.

* Each source has a bounded queue. A live source keeps its newest ``capacity`` frames (an
  older one is pushed out and counted as dropped); a file source's producer waits for
  room instead (:meth:`Batcher.room`), so files lose no frame.
* A batch starts when any frame is queued and takes frames round-robin across sources.
  It is handed over when it is full, when nothing more can come, or when waiting longer
  is not worth it:

  - files are never short of frames for long, so the batcher waits for them (up to
    ``max_wait_s`` after the batch started), and until then gives no file more than its
    share of the batch: several files move at the same pace;
  - a live source delivers at its own rate. The batcher learns each live source's frame
    interval and waits only for a source whose next frame is due before the deadline
    (with a quarter of an interval's slack), never for one that is late or down. Two
    unsynchronized cameras therefore batch when their frames happen to be close and do
    not pay the wait when they are not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

INTERVALS = 8  # frame intervals remembered per live source (the median is the estimate)
SLACK = 0.25  # a live frame is "coming" until this share of an interval past its due time


class _Source:
    __slots__ = ("capacity", "done", "intervals", "last_put", "live", "queue")

    def __init__(self, capacity: int, live: bool):
        self.queue: deque[Any] = deque()
        self.capacity = capacity
        self.live = live
        self.done = False
        self.last_put: float | None = None
        self.intervals: deque[float] = deque(maxlen=INTERVALS)

    def interval(self) -> float | None:
        """The source's typical frame interval (median of the recent ones), None until known."""
        if not self.intervals:
            return None
        values = sorted(self.intervals)
        return values[len(values) // 2]


class Batcher:
    """Assemble batches of up to ``max_n`` frames from per-source queues.

    Items are any objects with a ``sid`` attribute (the source number from :meth:`add`).

    Args:
        max_n: most frames per batch.
        max_wait_s: longest a batch waits for more frames after it started.
    """

    def __init__(self, max_n: int, max_wait_s: float):
        self.max_n = max_n
        self.max_wait_s = max_wait_s
        self.sources: list[_Source] = []
        self._batch: list[Any] | None = None  # the batch being assembled
        self._deadline = 0.0
        self._rr = 0  # the source that comes first in the next round-robin pass
        self._waited = False  # the batch being assembled has waited for more frames
        self._size_before_wait = 0
        self.waits = 0  # batches handed over after waiting for more frames
        self.vain_waits = 0  # ... that got no frame from the wait

    # -- producers -------------------------------------------------------------------
    def add(self, capacity: int, live: bool) -> int:
        """Register a source; returns its number (``sid``)."""
        self.sources.append(_Source(capacity, live))
        return len(self.sources) - 1

    def room(self, sid: int) -> int:
        """Free places in a source's queue (a file's producer waits while it is 0)."""
        s = self.sources[sid]
        return max(0, s.capacity - len(s.queue))

    def put(self, sid: int, items: Sequence[Any], now: float) -> int:
        """Queue frames of one source; returns how many older frames of a live source they
        pushed out (a file source's queue may exceed its capacity by one chunk)."""
        s = self.sources[sid]
        if s.live and items:
            if s.last_put is not None and now > s.last_put:
                s.intervals.append((now - s.last_put) / len(items))
            s.last_put = now
        s.queue.extend(items)
        dropped = 0
        if s.live:
            while len(s.queue) > s.capacity:
                s.queue.popleft()
                dropped += 1
        return dropped

    def finish(self, sid: int) -> None:
        """The source will give no more frames (it ended, failed for good, or was closed)."""
        self.sources[sid].done = True

    # -- the consumer ----------------------------------------------------------------
    @property
    def queued(self) -> bool:
        return any(s.queue for s in self.sources)

    @property
    def exhausted(self) -> bool:
        """Every source is done and nothing is left to hand over."""
        return all(s.done for s in self.sources) and not self.queued and not self._batch

    def refill_wanted(self) -> bool:
        """A file's queue is at most half full: wake its producer, which then refills it in
        one go instead of ping-ponging with the consumer frame by frame."""
        return any(not s.live and len(s.queue) <= s.capacity // 2 for s in self.sources)

    def poll(self, now: float) -> tuple[list[Any] | None, float | None]:
        """Advance the batch being assembled.

        Returns ``(batch, None)`` when a batch is ready; ``(None, t)`` when it is worth
        waiting for more frames until ``t`` (call again then, or as soon as a frame is
        queued); ``(None, None)`` when nothing is queued at all.
        """
        if self._batch is None:
            if not self.queued:
                return None, None
            self._batch = []
            self._deadline = now + self.max_wait_s
            self._waited = False
            self._size_before_wait = 0
        batch = self._batch
        self._drain(batch, self._file_share())
        wake = None if len(batch) >= self.max_n else self._worth_waiting_until(batch, now)
        if wake is not None and wake > now:
            if not self._waited:
                self._waited = True
                self._size_before_wait = len(batch)
            return None, wake
        self._drain(batch, None)  # the wait is over: fill from anyone
        if self._waited:
            self.waits += 1
            self.vain_waits += len(batch) == self._size_before_wait
        self._batch = None
        return batch, None

    def _worth_waiting_until(self, batch: list[Any], now: float) -> float | None:
        """Until when more frames are worth waiting for (None: not at all)."""
        if now >= self._deadline:
            return None
        in_batch = {it.sid for it in batch}
        until: float | None = None
        for sid, s in enumerate(self.sources):
            if s.done:
                continue
            if not s.live:
                return self._deadline  # a file is never short of frames for long
            if sid in in_batch or s.last_put is None:
                continue
            interval = s.interval()
            if interval is None:
                continue
            due = s.last_put + interval
            slack = SLACK * interval
            if now - slack <= due <= self._deadline:  # coming, and in time for this batch
                until = max(until or 0.0, min(due + slack, self._deadline))
        return until

    def _file_share(self) -> int | None:
        """Most frames one file may give a batch before the wait is over (None: any)."""
        files = sum(1 for s in self.sources if not s.live and (s.queue or not s.done))
        return -(-self.max_n // files) if files > 1 else None

    def _drain(self, batch: list[Any], file_share: int | None) -> None:
        n = len(self.sources)
        taken = [0] * n
        for it in batch:
            taken[it.sid] += 1
        while len(batch) < self.max_n:
            took = False
            for k in range(n):
                sid = (self._rr + k) % n
                s = self.sources[sid]
                if not s.queue or len(batch) >= self.max_n:
                    continue
                if file_share is not None and not s.live and taken[sid] >= file_share:
                    continue
                batch.append(s.queue.popleft())
                taken[sid] += 1
                took = True
            self._rr = (self._rr + 1) % n
            if not took:
                return
