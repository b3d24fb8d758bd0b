"""The stream: capture threads, bounded queues, a micro-batcher and the inference loop.

Threads and queues::

    source 0 -> capture thread -> queue 0 \\
    source 1 -> capture thread -> queue 1  >- micro-batcher -> normalize + infer + top-k
    ...                                   /        (the thread iterating the Stream)
                                                     -> overlay -> sinks -> yield result

* Each capture thread reads its source, checks the frame, converts it to the model's
  channels and resizes it to the model's input (OpenCV releases the GIL, so sources
  capture and resize in parallel), then puts it in its source's queue.
* A live source's queue holds ``queue_size`` frames (1 by default); a new frame
  pushes out the oldest, which is counted as dropped: latency stays bounded by about
  one frame plus one batch however slow the model is. A file's queue blocks the
  capture thread instead, so every frame gets a result, in order; a file's frames are
  handed over in chunks (one lock and one wake-up per chunk, not per frame).
* The micro-batcher takes frames round-robin across the queues until it has ``batch``
  frames or ``max_wait_ms`` passed since the first one (several files share a batch
  fairly), normalizes the whole batch at once, runs it and routes each result back to
  its source, in order.
* A live source that raises or gives no frame is reopened with exponential backoff;
  one that delivers nothing for ``stall_timeout`` seconds is reported as stalled, its
  reader abandoned (a blocked ``read`` cannot be interrupted) and a fresh one opened.
  Other sources go on meanwhile. A bad frame is counted and skipped.
* :meth:`Stream.stop` (from a signal handler, another thread or a callback) ends the
  loop at the next batch; closing the stream flushes and closes every sink.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgevit.errors import BackendError, EdgeVitError, InputError, first_line
from edgevit.runtime import Model, top_probs
from edgevit.stream.overlay import draw_overlay
from edgevit.stream.results import FrameResult
from edgevit.stream.sinks import Sink, open_sink
from edgevit.stream.sources import CorruptFrameError, Reader, Source, open_source
from edgevit.stream.stats import SourceStats, StreamStats

POLL_S = 0.05  # longest the loop waits without checking stop, stalls and events
MAX_FAILED_BATCHES = 20  # consecutive failed batches before the model is declared broken


@dataclass
class StreamEvent:
    """Something the user should hear about: ``failed``, ``stalled``, ``reopened``,
    ``corrupt``, ``ended`` or ``error`` (inference failed on frames)."""

    kind: str
    source: str
    message: str


@dataclass
class _Item:
    __slots__ = ("frame", "index", "sid", "small", "t_mono", "t_wall")  # one per frame: no __dict__
    sid: int
    index: int
    t_wall: float
    t_mono: float
    frame: np.ndarray
    small: np.ndarray  # model-size uint8 HxWxC


class _Inbox:
    """Per-source bounded queues under one lock, and the micro-batcher that drains them."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.queues: list[deque[_Item]] = []
        self.capacity: list[int] = []
        self.live: list[bool] = []
        self.done: list[bool] = []
        self.closed = False
        self.takers = 0  # threads waiting in take(): a put wakes them only if there are any
        self._rr = 0

    def add(self, capacity: int, live: bool) -> int:
        self.queues.append(deque())
        self.capacity.append(capacity)
        self.live.append(live)
        self.done.append(False)
        return len(self.queues) - 1

    def put(self, items: list[_Item]) -> int:
        """Queue frames of one source; returns how many stale frames they pushed out
        (live sources). A file source hands frames over in chunks: one lock and at most
        one wake-up per chunk, not per frame."""
        sid = items[0].sid
        with self.cond:
            q, cap = self.queues[sid], self.capacity[sid]
            dropped = 0
            if self.live[sid]:
                q.extend(items)
                while len(q) > cap:
                    q.popleft()
                    dropped += 1
            else:
                while len(q) >= cap and not self.closed:
                    self.cond.wait(POLL_S)
                if self.closed:
                    return 0
                q.extend(items)
            if self.takers:
                self.cond.notify_all()
            return dropped

    def finish(self, sid: int) -> None:
        with self.cond:
            self.done[sid] = True
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def exhausted(self) -> bool:
        with self.cond:
            return all(self.done) and not any(self.queues)

    def take(self, max_n: int, max_wait_s: float) -> list[_Item]:
        """Up to ``max_n`` frames, round-robin across sources; waits at most ``POLL_S``
        for the first frame, then at most ``max_wait_s`` for the batch to fill.

        Several file sources share each batch fairly: until the wait is over, none of them
        gets more than its share of the batch (a file source is never short of frames for
        long, so waiting a moment for the others keeps every file moving at the same pace).
        Live sources give what they have: waiting for a camera would stall the files."""
        batch: list[_Item] = []
        with self.cond:
            if not any(self.queues):
                if self.closed or all(self.done):
                    return batch
                self._wait(POLL_S)
                if not any(self.queues):
                    return batch
            deadline = time.monotonic() + max_wait_s
            while True:
                self._drain(batch, max_n, self._file_share(max_n))
                if len(batch) >= max_n or self.closed or all(self.done):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wait(remaining)
            self._drain(batch, max_n, None)  # the wait is over: fill from anyone
            # wake blocked file readers only once their queue is half empty: they then refill
            # it in one go instead of ping-ponging with this thread frame by frame
            if any(not live and len(q) <= cap // 2 for q, cap, live in zip(self.queues, self.capacity, self.live)):
                self.cond.notify_all()
        return batch

    def _file_share(self, max_n: int) -> int | None:
        """Most frames one file source may give a batch before the wait is over (None: any)."""
        files = sum(1 for q, live, done in zip(self.queues, self.live, self.done) if not live and (q or not done))
        return -(-max_n // files) if files > 1 else None

    def _wait(self, timeout: float) -> None:
        self.takers += 1
        try:
            self.cond.wait(timeout)
        finally:
            self.takers -= 1

    def _drain(self, batch: list[_Item], max_n: int, file_share: int | None) -> None:
        n = len(self.queues)
        taken = [0] * n
        for it in batch:
            taken[it.sid] += 1
        while len(batch) < max_n:
            took = False
            for k in range(n):
                sid = (self._rr + k) % n
                q = self.queues[sid]
                if not q or len(batch) >= max_n:
                    continue
                if file_share is not None and not self.live[sid] and taken[sid] >= file_share:
                    continue
                batch.append(q.popleft())
                taken[sid] += 1
                took = True
            self._rr = (self._rr + 1) % n
            if not took:
                return


class _Slot:
    """A source and the state of its capture thread."""

    def __init__(self, sid: int, source: Source, stats: SourceStats):
        self.sid = sid
        self.source = source
        self.stats = stats
        self.generation = 0  # bumped to abandon a stalled capture thread
        self.next_index = 0
        self.last_frame = time.monotonic()
        self.thread: threading.Thread | None = None
        self.ended = False


class Stream:
    """Run a model on frames from one or more sources and send results to sinks.

    Args:
        model: a loaded artifact (:func:`edgevit.runtime.load`).
        sources: URIs (see :mod:`edgevit.stream.sources`) or :class:`Source` objects.
        sinks: URIs (see :mod:`edgevit.stream.sinks`) or :class:`Sink` objects.
        batch: most frames per inference call (default: 8 if every source is a file or
            folder, else the number of sources).
        max_wait_ms: longest the first frame of a batch waits for the batch to fill.
        top_k: classes reported per frame.
        queue_size: frames queued per live source (default 1: only the latest); file
            sources queue ``max(2 * batch, 16)`` and never drop.
        stall_timeout: seconds without a frame after which a live source is reopened.
        backoff: first and largest delay between reopen attempts, in seconds.
        max_frames: stop after this many results (all sources together).
        duration: stop after this many seconds.
        on_event: called with each :class:`StreamEvent`, on the iterating thread.
        source_options: keyword arguments for :func:`open_source` (width, height, fps,
            flip, latency_ms) applied to URI sources.
    """

    def __init__(
        self,
        model: Model,
        sources: Sequence[str | Path | Source],
        sinks: Sequence[str | Path | Sink] = (),
        *,
        batch: int | None = None,
        max_wait_ms: float = 5.0,
        top_k: int = 5,
        queue_size: int = 1,
        stall_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.5, 8.0),
        max_frames: int | None = None,
        duration: float | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
        source_options: dict[str, Any] | None = None,
    ):
        if isinstance(sources, (str, Path, Source)):
            sources = [sources]
        if not sources:
            raise InputError("no sources; pass at least one, e.g. synthetic://, csi://0 or video.mp4")
        for name, value in (("batch", batch), ("queue_size", queue_size), ("top_k", top_k), ("max_frames", max_frames)):
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        for name, value in (("max_wait_ms", max_wait_ms), ("stall_timeout", stall_timeout)):
            if value < 0 or (name == "stall_timeout" and value == 0):
                raise InputError(f"{name} must be positive, got {value}")
        self.model = model
        self.sources = [s if isinstance(s, Source) else open_source(s, **(source_options or {})) for s in sources]
        self._sink_specs = list(sinks)
        self.sinks: list[Sink] = []
        all_files = not any(s.live for s in self.sources)
        self.batch = batch or (8 if all_files else len(self.sources))
        self.max_wait_s = max_wait_ms / 1000.0
        self.top_k = max(1, min(top_k, model.num_classes))
        self.queue_size = queue_size
        self.stall_timeout = stall_timeout
        self.backoff = backoff
        self.max_frames = max_frames
        self.duration = duration
        self.on_event = on_event
        self.events: deque[StreamEvent] = deque(maxlen=1000)
        self.stats = StreamStats()
        self._events: queue.SimpleQueue[StreamEvent] = queue.SimpleQueue()
        self._inbox = _Inbox()
        self._slots: list[_Slot] = []
        self._stop = threading.Event()
        self._started = False
        self._closed = False
        self._prepare = _Converter(model)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Stream:
        """Open every source and sink and start the capture threads. A source that
        cannot be opened now raises; later failures of live sources are retried."""
        if self._started:
            return self
        self._started = True
        readers: list[Reader] = []
        try:
            for sid, source in enumerate(self.sources):
                readers.append(_open(source))
                stats = SourceStats(sid, source.uri, source.live, total=source.total)
                self.stats.sources.append(stats)
                capacity = self.queue_size if source.live else max(2 * self.batch, 16)
                self._inbox.add(capacity, source.live)
                self._slots.append(_Slot(sid, source, stats))
            for spec in self._sink_specs:
                self.sinks.append(spec if isinstance(spec, Sink) else open_sink(spec))
            for sink in self.sinks:
                sink.open(self.sources)
        except BaseException:
            for r in readers:
                _quiet_close(r)
            self._close_sinks()
            self._closed = True
            raise
        self._warm_up()
        self.stats.started = time.monotonic()
        for slot, reader in zip(self._slots, readers):
            slot.stats.state = "running"
            self._start_capture(slot, reader)
        return self

    def _warm_up(self) -> None:
        """Inference before capture starts: first calls are slow (ONNX Runtime allocates and
        times each batch-size bucket, TensorRT sets up its context) and would otherwise show
        as drops and a latency spike. Live batches take any size up to ``batch``, so every
        power of two below it is warmed up too; file batches are full but for the last."""
        c, size = self.model.preprocess.channels, self.model.preprocess.size
        top = min(self.batch, self.model.batch_size)
        sizes = {top}
        if any(s.live for s in self.sources):
            sizes.update(1 << k for k in range(top.bit_length()) if 1 << k < top)
        for n in sorted(sizes):
            with contextlib.suppress(Exception):  # a broken model is reported by the loop itself
                self.model.infer_tensor(np.zeros((n, c, size, size), np.float32))

    def stop(self) -> None:
        """End the stream at the next batch (thread- and signal-handler-safe)."""
        if not self.stats.stopped_by:
            self.stats.stopped_by = "stop"
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop capture, then flush and close every sink. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._inbox.close()
        deadline = time.monotonic() + 2.0
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
        self._close_sinks()
        if self.stats.ended is None:
            self.stats.ended = time.monotonic()
        self._deliver_events()

    def __enter__(self) -> Stream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and not self.stats.stopped_by:
            self.stats.stopped_by = "interrupt" if issubclass(exc_type, KeyboardInterrupt) else "error"
        self.close()

    def run(self, on_result: Callable[[FrameResult], None] | None = None) -> StreamStats:
        """Start, process until the sources end or :meth:`stop`, close; return the stats."""
        with self:
            for result in self:
                if on_result is not None:
                    on_result(result)
        return self.stats

    # -- the loop ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[FrameResult]:
        self.start()
        try:
            yield from self._loop()
        finally:
            self.stats.ended = time.monotonic()
            self.close()  # sinks are flushed and closed however the iteration ends

    def _loop(self) -> Iterator[FrameResult]:
        stats = self.stats
        t_end = stats.started + self.duration if self.duration else None
        failed_in_row = 0
        while not self._stop.is_set():
            self._supervise()
            self._deliver_events()
            if t_end is not None and time.monotonic() >= t_end:
                self._stop_by("duration")
                break
            items = self._inbox.take(self.batch, self.max_wait_s)
            if not items:
                if self._inbox.exhausted():
                    break
                continue
            results = self._infer(items)
            if not results:
                failed_in_row += 1
                if failed_in_row >= MAX_FAILED_BATCHES:
                    self._stop_by("error")
                    raise BackendError(
                        f"inference failed on {failed_in_row} batches in a row; "
                        f"last error: {self.stats.sources[items[0].sid].last_error}"
                    )
                continue
            failed_in_row = 0
            for result in results:
                self._emit(result)
                yield result
                if self.max_frames is not None and stats.results >= self.max_frames:
                    self._stop_by("max_frames")
                    break
                if self._stop.is_set():
                    break

    def _stop_by(self, reason: str) -> None:
        if not self.stats.stopped_by:
            self.stats.stopped_by = reason
        self._stop.set()

    def _infer(self, items: list[_Item]) -> list[FrameResult]:
        t0 = time.monotonic()
        try:
            logits = self._logits(np.stack([it.small for it in items]))
        except Exception as exc:
            if len(items) == 1:
                return self._failed(items, exc)
            # find the frames that break it; keep the others
            results: list[FrameResult] = []
            for it in items:
                results.extend(self._infer([it]))
            return results
        idx, top = top_probs(logits, self.top_k)
        now = time.monotonic()
        self.stats.infer_s += now - t0
        self.stats.batches += 1
        self.stats.batched_frames += len(items)
        labels = self.model.labels(idx)
        return [
            FrameResult(
                source=self.sources[it.sid].uri,
                source_id=it.sid,
                index=it.index,
                timestamp=it.t_wall,
                latency_ms=(now - it.t_mono) * 1000.0,
                indices=idx[j],
                probs=top[j],
                labels=labels[j],
                frame=it.frame,
                batch_size=len(items),
            )
            for j, it in enumerate(items)
        ]

    def _logits(self, small: np.ndarray) -> np.ndarray:
        # uint8 frames already checked and resized on capture: normalize the whole batch at
        # once, no NaN check needed
        return self.model.infer_tensors(self.model.preprocess.normalize(small))

    def _failed(self, items: list[_Item], exc: BaseException) -> list[FrameResult]:
        self.stats.failed_batches += 1
        for it in items:
            st = self.stats.sources[it.sid]
            st.errors += 1
            st.last_error = first_line(exc)
            self._event("error", self.sources[it.sid].uri, f"frame {it.index}: inference failed: {first_line(exc)}")
        return []

    def _emit(self, result: FrameResult) -> None:
        st = self.stats.sources[result.source_id]
        now = time.monotonic()
        st.record(result.latency_ms, now)
        if not self.sinks:
            return
        annotated = None
        if any(s.wants_frames for s in self.sinks):
            annotated = draw_overlay(result.frame, result.label, result.prob, st.fps(now), result.latency_ms)
        for sink in self.sinks:
            try:
                sink.write(result, annotated)
            except EdgeVitError:
                self._stop_by("sink")
                raise
            except (OSError, ValueError) as exc:  # disk full, closed pipe, ...
                self._stop_by("sink")
                raise EdgeVitError(f"cannot write to {sink.uri}: {first_line(exc)}") from exc
            if sink.wants_stop:
                self._stop_by("sink")

    def _close_sinks(self) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # close the others anyway
                errors.append(f"{sink.uri}: {first_line(exc)}")
        self.sinks = []
        if errors:
            raise EdgeVitError("could not close " + "; ".join(errors))

    # -- capture threads -----------------------------------------------------------------
    def _start_capture(self, slot: _Slot, reader: Reader | None) -> None:
        slot.last_frame = time.monotonic()
        slot.thread = threading.Thread(
            target=self._capture, args=(slot, slot.generation, reader), name=f"capture-{slot.sid}", daemon=True
        )
        slot.thread.start()

    def _capture(self, slot: _Slot, generation: int, reader: Reader | None) -> None:
        source, st = slot.source, slot.stats
        # files: frames go to the queue in chunks (one lock and one wake-up per chunk), sized
        # so that several file sources still share each batch; live: one by one (freshest)
        files = sum(not s.live for s in self.sources)
        chunk = 1 if source.live else max(1, self.batch // files)
        pending: list[_Item] = []

        def flush() -> None:
            if pending:
                st.dropped += self._inbox.put(pending[:])
                pending.clear()

        def current() -> bool:
            return slot.generation == generation and not self._stop.is_set()

        try:
            while current():
                if reader is None:
                    reader = self._reopen(slot, generation)
                    if reader is None:
                        return
                try:
                    frame = reader.read()
                except CorruptFrameError as exc:
                    slot.next_index += 1
                    st.corrupt += 1
                    self._event("corrupt", source.uri, first_line(exc))
                    continue
                except Exception as exc:
                    if not current():
                        return
                    st.failures += 1
                    st.last_error = first_line(exc)
                    _quiet_close(reader)
                    reader = None
                    if not source.live:
                        flush()
                        self._event("failed", source.uri, f"{st.last_error}; the source is closed")
                        st.state = "failed"
                        break
                    self._event("failed", source.uri, f"{st.last_error}; reopening")
                    continue
                if not current():
                    return
                if frame is None:
                    flush()
                    st.state = "ended"
                    self._event("ended", source.uri, f"end of stream after {slot.next_index} frames")
                    break
                t_wall, t_mono = time.time(), time.monotonic()
                slot.last_frame = t_mono
                index = slot.next_index
                slot.next_index += 1
                try:
                    small = self._prepare(frame)
                except Exception as exc:
                    st.corrupt += 1
                    self._event("corrupt", source.uri, f"frame {index}: {first_line(exc)}")
                    continue
                st.captured += 1
                pending.append(_Item(slot.sid, index, t_wall, t_mono, frame, small))
                if len(pending) >= chunk or t_mono - pending[0].t_mono >= self.max_wait_s:
                    flush()
            if slot.generation == generation:
                slot.ended = True
                self._inbox.finish(slot.sid)
        finally:
            if reader is not None:
                _quiet_close(reader)

    def _reopen(self, slot: _Slot, generation: int) -> Reader | None:
        """Open a live source again, with exponential backoff; None if stopped or superseded."""
        st = slot.stats
        st.state = "reopening"
        delay = self.backoff[0]
        while slot.generation == generation and not self._stop.is_set():
            if self._stop.wait(delay):
                return None
            try:
                reader = _open(slot.source)
            except Exception as exc:
                st.last_error = first_line(exc)
                delay = min(delay * 2, self.backoff[1])
                self._event("failed", slot.source.uri, f"reopen failed: {st.last_error}; next try in {delay:.1f} s")
                continue
            if slot.generation != generation:
                _quiet_close(reader)
                return None
            st.reopens += 1
            st.state = "running"
            slot.last_frame = time.monotonic()
            self._event("reopened", slot.source.uri, "reopened")
            return reader
        return None

    def _supervise(self) -> None:
        """Replace the capture thread of a live source that stopped delivering frames."""
        now = time.monotonic()
        for slot in self._slots:
            if (
                slot.source.live
                and not slot.ended
                and slot.stats.state == "running"
                and now - slot.last_frame > self.stall_timeout
            ):
                slot.stats.stalls += 1
                slot.stats.failures += 1
                slot.stats.last_error = f"no frame for {now - slot.last_frame:.1f} s"
                self._event("stalled", slot.source.uri, f"{slot.stats.last_error}; reopening")
                slot.generation += 1  # the stuck thread exits when (if) its read returns
                slot.stats.state = "reopening"
                self._start_capture(slot, None)

    # -- events --------------------------------------------------------------------------
    def _event(self, kind: str, source: str, message: str) -> None:
        self._events.put(StreamEvent(kind, source, message))

    def _deliver_events(self) -> None:
        while True:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                return
            self.events.append(ev)
            if self.on_event is not None:
                self.on_event(ev)


class _Converter:
    """Frame (BGR, BGRA or gray uint8) -> the model's channels and input size."""

    def __init__(self, model: Model):
        import cv2

        self.cv2 = cv2
        self.pre = model.preprocess
        self.size = (model.preprocess.size, model.preprocess.size)

    def __call__(self, frame: Any) -> np.ndarray:
        cv2 = self.cv2
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3) or frame.size == 0:
            what = (
                f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            )
            raise CorruptFrameError(f"unusable frame ({what}); sources must give uint8 BGR or grayscale images")
        ch = 1 if frame.ndim == 2 else frame.shape[2]
        if ch not in (1, 3, 4):
            raise CorruptFrameError(f"frame has {ch} channels; expected 1 (gray), 3 (BGR) or 4 (BGRA)")
        if self.pre.channels == 1:
            img = frame if ch == 1 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if ch == 3 else cv2.COLOR_BGRA2GRAY)
        else:
            code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}[ch]
            img = cv2.cvtColor(frame, code)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.shape[:2] == self.size:  # already at model size (the camera was set to it)
            img = img.copy() if img is frame else img  # never a view of the reader's buffer
            return img if img.ndim == 3 else img[:, :, None]
        return self.pre.resize([img])[0]


def _open(source: Source) -> Reader:
    try:
        return source.open()
    except EdgeVitError:
        raise
    except Exception as exc:
        raise EdgeVitError(f"cannot open {source.uri}: {first_line(exc)}") from exc


def _quiet_close(reader: Reader) -> None:
    with contextlib.suppress(Exception):
        reader.close()
