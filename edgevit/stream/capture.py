"""Capture supervision: one thread per source opens it, reads frames, converts them to
the model's input and hands them to the inbox; failures are retried and stalls replaced.

* Every open happens on the source's own capture thread, never on the thread running the
  stream: a camera that hangs in its open cannot hold up the others, the inference loop,
  Ctrl-C or shutdown.
* A live source that fails, to open (also the first time) or to read, is opened again
  after a delay that starts at ``backoff[0]``, doubles after each failed attempt and stops
  growing at ``backoff[1]``; it starts again from ``backoff[0]`` once frames flow. Each
  failed attempt is counted and reported once.
* A live source that is inside ``open`` for longer than its open limit (the stall timeout,
  at least the source's ``min_open_timeout``: 5 s for OpenCV cameras and streams) or delivers no frame for
  ``stall_timeout`` is reported as stalled: its thread is abandoned (a blocked ``open`` or
  ``read`` cannot be interrupted, and a capture must be released only by the thread using
  it) and a fresh one takes over. Sources that can enforce timeouts themselves (OpenCV's
  FFmpeg backend) get them from the same numbers, so their calls return by themselves.
* A file or folder that fails is closed for good; the other sources go on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgevit.errors import EdgeVitError, first_line
from edgevit.stream.inbox import Inbox
from edgevit.stream.sources import CorruptFrameError, Reader, Source
from edgevit.stream.stats import SourceStats

MAX_ABANDONED = 3  # threads of one source stuck in open/read before no new one is started


class CapturedFrame:
    """A frame on its way from a capture thread to the batcher."""

    __slots__ = ("frame", "index", "sid", "small", "t_capture", "t_mono", "t_wall")  # one per frame: no __dict__

    def __init__(
        self,
        sid: int,
        index: int,
        t_wall: float,
        t_mono: float,
        frame: np.ndarray,
        small: np.ndarray,
        t_capture: float | None = None,
    ):
        self.sid = sid
        self.index = index
        self.t_wall = t_wall  # wall clock when the reader returned it
        self.t_mono = t_mono  # the same moment, monotonic: where latency starts
        self.frame = frame
        self.small = small  # model-size uint8 HxWxC
        self.t_capture = t_capture  # the backend's capture time (wall clock), if it gives one


class Backoff:
    """Delays between attempts: ``first``, doubling, at most ``cap``; :meth:`reset` once
    the source works again."""

    def __init__(self, first: float, cap: float):
        self.first = first
        self.cap = max(cap, first)
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class Capture:
    """One source: its capture thread, reopened on failure and replaced when it stalls.

    Args:
        sid: the source's number in the stream (and in the inbox).
        source: where frames come from.
        stats: the source's counters (this object is their only writer).
        inbox: where frames go.
        convert: frame -> model-size uint8 image (raises CorruptFrameError).
        emit: ``emit(kind, message)`` reports an event (thread-safe).
        stop: set when the stream stops.
        stall_timeout: seconds without a frame (or inside an open, at least the source's
            ``min_open_timeout``) before a live source counts as stalled.
        backoff: first and largest delay between attempts, in seconds.
        chunk: frames a file source hands over at once.
        flush_s: longest a file's frame waits for its chunk to fill.
    """

    def __init__(
        self,
        sid: int,
        source: Source,
        stats: SourceStats,
        *,
        inbox: Inbox,
        convert: Callable[[Any], np.ndarray],
        emit: Callable[[str, str], None],
        stop: threading.Event,
        stall_timeout: float,
        backoff: tuple[float, float],
        chunk: int = 1,
        flush_s: float = 0.005,
    ):
        self.sid = sid
        self.source = source
        self.stats = stats
        self.inbox = inbox
        self.convert = convert
        self.emit = emit
        self.stop = stop
        self.stall_timeout = stall_timeout
        self.open_limit = max(stall_timeout, source.min_open_timeout)
        self.backoff = Backoff(*backoff)
        self.chunk = chunk
        self.flush_s = flush_s
        self.lock = threading.Lock()  # state shared with the supervisor (the stream's thread)
        self.generation = 0  # bumped to abandon a stalled capture thread
        self.phase = "new"  # opening, reading, waiting, stuck, done
        self.since = time.monotonic()  # start of the current open, or the last frame
        self.delivered = False  # has ever given a frame
        self.attempts_failed = 0  # failed attempts since frames last flowed
        self.down_since: float | None = None
        self.next_index = 0
        self.threads: list[threading.Thread] = []
        if source.live:  # sources that can bound their own calls get the same limits
            source.open_timeout = self.open_limit
            source.read_timeout = stall_timeout / 2  # a freeze costs two reads: the held-back frame, then none

    # -- the stream's side -------------------------------------------------------------
    def start(self) -> None:
        with self.lock:
            self.since = time.monotonic()
            self._spawn(0.0)

    @property
    def finished(self) -> bool:
        """Ended or failed for good (files), or stopped."""
        return self.phase == "done"

    @property
    def failed_once(self) -> bool:
        return self.stats.failures > 0

    def supervise(self, now: float) -> None:
        """Replace the capture thread of a live source stuck in open or read (called by the
        stream's thread between batches)."""
        if not self.source.live or self.phase not in ("opening", "reading", "stuck"):
            return
        with self.lock:
            if self.phase == "stuck":
                self.threads = [t for t in self.threads if t.is_alive()]
                if len(self.threads) < MAX_ABANDONED:
                    self.phase = "waiting"
                    self._spawn(0.0)
                return
            limit = self.open_limit if self.phase == "opening" else self.stall_timeout
            idle = now - self.since
            if self.phase not in ("opening", "reading") or idle <= limit:
                return
            what = f"open did not return in {idle:.1f} s" if self.phase == "opening" else f"no frame for {idle:.1f} s"
            self.generation += 1  # the stuck thread exits when (if) its call returns
            self.stats.stalls += 1
            self._count_failure(what, now)
            self.threads = [t for t in self.threads if t.is_alive()]
            if len(self.threads) >= MAX_ABANDONED:
                self.phase = "stuck"
                self.emit("stalled", f"{what}; {len(self.threads)} readers still blocked, waiting for one to return")
                return
            delay = self.backoff.next()
            self.phase = "waiting"
            self.emit("stalled", f"{what}; reopening in {delay:.3g} s")
            self._spawn(delay)

    def join(self, deadline: float) -> None:
        for t in list(self.threads):
            t.join(max(0.0, deadline - time.monotonic()))

    # -- the capture thread ------------------------------------------------------------
    def _spawn(self, delay: float) -> None:
        t = threading.Thread(target=self._run, args=(self.generation, delay), name=f"capture-{self.sid}", daemon=True)
        self.threads.append(t)
        t.start()

    def _current(self, generation: int) -> bool:
        return self.generation == generation and not self.stop.is_set()

    def _set_phase(self, generation: int, phase: str) -> bool:
        with self.lock:
            if self.generation != generation:
                return False
            self.phase = phase
            self.since = time.monotonic()
            return True

    def _count_failure(self, error: str, now: float) -> None:
        """Under the lock."""
        st = self.stats
        st.failures += 1
        st.last_error = error
        st.state = "reopening" if self.source.live else "failed"
        self.attempts_failed += 1
        if self.down_since is None:
            self.down_since = now

    def _failed(self, generation: int, error: str) -> float | None:
        """Count a failed open or read; the delay before the next attempt (None: give up)."""
        with self.lock:
            if self.generation != generation:
                return None
            self._count_failure(error, time.monotonic())
            if not self.source.live:
                self.phase = "done"
                self.emit("failed", f"{error}; the source is closed")
                return None
            delay = self.backoff.next()
            self.phase = "waiting"
            attempt = f" (attempt {self.attempts_failed})" if self.attempts_failed > 1 else ""
            self.emit("failed", f"{error}; next try in {delay:.3g} s{attempt}")
            return delay

    def _open(self, generation: int) -> tuple[Reader | None, float | None]:
        """A reader, or None and the delay before the next attempt (None: give up)."""
        if not self._set_phase(generation, "opening"):
            return None, None
        try:
            reader = self.source.open()
        except Exception as exc:
            if not self._current(generation):
                return None, None
            message = first_line(exc)
            if not isinstance(exc, EdgeVitError):
                message = f"cannot open {self.source.uri}: {message}"
            return None, self._failed(generation, message)
        with self.lock:
            if self.generation != generation or self.stop.is_set():
                superseded = True
            else:
                superseded = False
                self.phase = "reading"
                self.since = time.monotonic()
                if self.source.total is not None:  # files know their length once open
                    self.stats.total = self.source.total
                if self.attempts_failed:
                    self.stats.reopens += 1
                    down = time.monotonic() - (self.down_since or time.monotonic())
                    self.emit("reopened", f"reopened after {self.attempts_failed} failed attempts, {down:.1f} s down")
        if superseded:
            _quiet_close(reader)
            return None, None
        return reader, None

    def _run(self, generation: int, delay: float) -> None:
        st = self.stats
        pending: list[CapturedFrame] = []
        reader: Reader | None = None

        def flush() -> None:
            if pending:
                st.dropped += self.inbox.put(self.sid, pending[:])
                pending.clear()

        try:
            while self._current(generation):
                if reader is None:
                    waiting = delay > 0 and self._set_phase(generation, "waiting")
                    if delay > 0 and (not waiting or self.stop.wait(delay)):
                        return
                    reader, retry = self._open(generation)
                    if reader is None:
                        if retry is None:  # superseded, stopped, or a file that failed
                            break
                        delay = retry
                        continue
                try:
                    frame = reader.read()
                except CorruptFrameError as exc:
                    self.next_index += 1
                    st.corrupt += 1
                    self.emit("corrupt", first_line(exc))
                    continue
                except Exception as exc:
                    if not self._current(generation):
                        return
                    _quiet_close(reader)
                    reader = None
                    flush()
                    retry = self._failed(generation, first_line(exc))
                    if retry is None:
                        break
                    delay = retry
                    continue
                if not self._current(generation):
                    return
                if frame is None:
                    flush()
                    with self.lock:
                        if self.generation == generation:
                            st.state = "ended"
                            self.phase = "done"
                    self.emit("ended", f"end of stream after {self.next_index} frames")
                    break
                t_wall, t_mono = time.time(), time.monotonic()
                self.since = t_mono
                index = self.next_index
                self.next_index += 1
                if not self.delivered or self.attempts_failed:
                    self._flowing()
                try:
                    small = self.convert(frame)
                except Exception as exc:
                    st.corrupt += 1
                    self.emit("corrupt", f"frame {index}: {first_line(exc)}")
                    continue
                st.captured += 1
                t_capture = getattr(reader, "capture_time", None)
                pending.append(CapturedFrame(self.sid, index, t_wall, t_mono, frame, small, t_capture))
                if len(pending) >= self.chunk or t_mono - pending[0].t_mono >= self.flush_s:
                    flush()
            flush()
            with self.lock:
                if self.generation == generation:
                    self.phase = "done"
                    self.inbox.finish(self.sid)
        finally:
            if reader is not None:
                _quiet_close(reader)  # only ever by the thread that reads it

    def _flowing(self) -> None:
        """Frames flow (again): the outage, its error and the backoff are over."""
        with self.lock:
            self.delivered = True
            self.attempts_failed = 0
            self.down_since = None
            self.backoff.reset()
            self.stats.state = "running"
            self.stats.last_error = ""


def _quiet_close(reader: Reader) -> None:
    with contextlib.suppress(Exception):
        reader.close()
