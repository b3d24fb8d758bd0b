"""The stream: sources in, batched inference, results out to sinks.

Threads and queues::

    source 0 -> capture thread -> queue 0 \\
    source 1 -> capture thread -> queue 1  >- batcher -> normalize + infer + top-k
    ...                                   /     (the thread iterating the Stream)
                                                  -> overlay -> sinks -> yield result

The jobs live in their own modules: :mod:`~edgevit.stream.capture` (a thread per source:
open, read, reopen with backoff, stall supervision), :mod:`~edgevit.stream.convert`
(frame -> model input, on the capture threads), :mod:`~edgevit.stream.batcher` (which
frames make a batch and how long to wait: pure code) and :mod:`~edgevit.stream.inbox`
(the hand-over under one lock). This module runs the model and the sinks and decides
when the stream ends:

* when every source has ended (files) or :meth:`Stream.stop` was called (a signal
  handler, another thread, a callback), at the next batch; or after ``max_frames``
  results or ``duration`` seconds;
* with :class:`CaptureError` when no source gives a single frame: every source failed at
  least once and the open limit has passed (``stall_timeout``; at least 5 s for OpenCV
  cameras and streams, whose opens take seconds), or every source ended without a frame. A live source that worked once is retried for as long
  as the stream runs.

Closing the stream flushes and closes every sink; capture threads still blocked in a
camera's ``open`` or ``read`` are left to finish on their own (they are daemon threads).
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
from edgevit.stream.batcher import Batcher
from edgevit.stream.capture import Capture, CapturedFrame
from edgevit.stream.convert import FrameConverter
from edgevit.stream.inbox import Inbox
from edgevit.stream.overlay import draw_overlay
from edgevit.stream.results import FrameResult
from edgevit.stream.sinks import Sink, open_sink
from edgevit.stream.sources import CaptureError, Source, open_source
from edgevit.stream.stats import SourceStats, StreamStats

POLL_S = 0.05  # longest the loop waits without checking stop, stalls and events
MAX_FAILED_BATCHES = 20  # consecutive failed batches before the model is declared broken
JOIN_S = 1.0  # how long close() waits for capture threads (one blocked in a camera is left)
USER_STOPS = ("stop", "max_frames", "sink", "SIGINT", "SIGTERM", "interrupt")


@dataclass
class StreamEvent:
    """Something the user should hear about: ``failed``, ``stalled``, ``reopened``,
    ``corrupt``, ``ended`` or ``error`` (inference failed on frames)."""

    kind: str
    source: str
    message: str


class Stream:
    """Run a model on frames from one or more sources and send results to sinks.

    Args:
        model: a loaded artifact (:func:`edgevit.runtime.load`).
        sources: URIs (see :mod:`edgevit.stream.sources`) or :class:`Source` objects.
        sinks: URIs (see :mod:`edgevit.stream.sinks`) or :class:`Sink` objects.
        batch_size: most frames per inference call (default: 8 if every source is a file
            or folder, else the number of sources).
        max_wait_ms: longest the first frame of a batch waits for the batch to fill (live
            sources: only while another source's frame is due).
        top_k: classes reported per frame.
        queue_size: frames queued per live source (default 1: only the latest); file
            sources queue ``max(2 * batch_size, 16)`` and never drop.
        stall_timeout: seconds without a frame after which a live source counts as
            stalled and is reopened; also the open limit (at least 5 s for OpenCV cameras
            and streams) and twice the read timeout of sources that take timeouts.
        backoff: first and largest delay between attempts to open a failed live source.
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
        batch_size: int | None = None,
        max_wait_ms: float = 5.0,
        top_k: int = 5,
        queue_size: int = 1,
        stall_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.25, 2.0),
        max_frames: int | None = None,
        duration: float | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
        source_options: dict[str, Any] | None = None,
    ):
        if isinstance(sources, (str, Path, Source)):
            sources = [sources]
        if not sources:
            raise InputError("no sources; pass at least one, e.g. synthetic://, csi://0 or video.mp4")
        for name, value in (
            ("batch_size", batch_size),
            ("queue_size", queue_size),
            ("top_k", top_k),
            ("max_frames", max_frames),
        ):
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if max_wait_ms < 0:
            raise InputError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        if not stall_timeout > 0:
            raise InputError(f"stall_timeout must be positive, got {stall_timeout}")
        if len(backoff) != 2 or not 0 < backoff[0] <= backoff[1]:
            raise InputError(f"backoff must be (first, largest) delays with 0 < first <= largest, got {backoff}")
        self.model = model
        self.sources = [s if isinstance(s, Source) else open_source(s, **(source_options or {})) for s in sources]
        self._sink_specs = list(sinks)
        self.sinks: list[Sink] = []
        all_files = not any(s.live for s in self.sources)
        self.batch_size = batch_size or (8 if all_files else len(self.sources))
        self.max_wait_s = max_wait_ms / 1000.0
        self.top_k = max(1, min(top_k, model.num_classes))
        self.queue_size = queue_size
        self.stall_timeout = stall_timeout
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.max_frames = max_frames
        self.duration = duration
        self.on_event = on_event
        self.events: deque[StreamEvent] = deque(maxlen=1000)
        self.stats = StreamStats()
        self._events: queue.SimpleQueue[StreamEvent] = queue.SimpleQueue()
        self._batcher = Batcher(self.batch_size, self.max_wait_s)
        self._inbox = Inbox(self._batcher)
        self.captures: list[Capture] = []
        self._stop = threading.Event()
        self._started = False
        self._closed = False
        self._delivered = False  # some source gave a frame
        self._inference_error = ""
        self._convert = FrameConverter(model.preprocess)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Stream:
        """Open every sink and start the capture threads. Sources are opened by their
        own capture threads: a source that cannot be opened is retried (live) or reported
        (files) while the others run."""
        if self._started:
            return self
        self._started = True
        try:
            for spec in self._sink_specs:
                self.sinks.append(spec if isinstance(spec, Sink) else open_sink(spec))
            for sink in self.sinks:
                sink.open(self.sources)
        except BaseException:
            self._close_sinks()
            self._closed = True
            raise
        files = sum(not s.live for s in self.sources)
        for sid, source in enumerate(self.sources):
            stats = SourceStats(sid, source.uri, source.live, total=source.total)
            self.stats.sources.append(stats)
            capacity = self.queue_size if source.live else max(2 * self.batch_size, 16)
            self._inbox.add(capacity, source.live)
            self.captures.append(
                Capture(
                    sid,
                    source,
                    stats,
                    inbox=self._inbox,
                    convert=self._convert,
                    emit=self._emitter(source.uri),
                    stop=self._stop,
                    stall_timeout=self.stall_timeout,
                    backoff=self.backoff,
                    # files: frames go to the queue in chunks sized so that several files
                    # still share each batch; live: one by one (the freshest)
                    chunk=1 if source.live else max(1, self.batch_size // files),
                    flush_s=self.max_wait_s,
                )
            )
        self._warm_up()
        self.stats.started = time.monotonic()
        for capture in self.captures:
            capture.start()
        return self

    def _warm_up(self) -> None:
        """Inference before capture starts: first calls are slow (ONNX Runtime allocates and
        times each batch-size bucket, TensorRT sets up its context) and would otherwise show
        as drops and a latency spike. Live batches take any size up to ``batch_size``, so
        every power of two below it is warmed up too; file batches are full but for the last."""
        c, size = self.model.preprocess.channels, self.model.preprocess.size
        top = min(self.batch_size, self.model.batch_size)
        sizes = {top}
        if any(s.live for s in self.sources):
            sizes.update(1 << k for k in range(top.bit_length()) if 1 << k < top)
        for n in sorted(sizes):
            with contextlib.suppress(Exception):  # a broken model is reported by the loop itself
                self.model.infer_one_call(np.zeros((n, c, size, size), np.float32))

    def stop(self) -> None:
        """End the stream at the next batch (thread- and signal-handler-safe)."""
        self._stop_by("stop")

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
        deadline = time.monotonic() + JOIN_S
        for capture in self.captures:
            capture.join(deadline)
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
            items = self._inbox.take(POLL_S)
            stats.batch_waits, stats.vain_waits = self._batcher.waits, self._batcher.vain_waits
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
                        f"inference failed on {failed_in_row} batches in a row; last error: {self._inference_error}"
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
        self._deliver_events()
        if not any(s.captured for s in stats.sources) and stats.stopped_by not in USER_STOPS:
            self._stop_by("error")
            raise CaptureError(f"no frame from any source ({self._trouble()})")

    def _supervise(self) -> None:
        """Replace stalled capture threads; give up when no source can give a frame."""
        now = time.monotonic()
        for capture in self.captures:
            capture.supervise(now)
        if self._delivered:
            return
        if any(c.delivered for c in self.captures):
            self._delivered = True
            return
        hopeless = all(c.finished or (c.failed_once and c.phase != "reading") for c in self.captures)
        if hopeless and now - self.stats.started >= max(c.open_limit for c in self.captures):
            self._stop_by("error")
            self._deliver_events()
            raise CaptureError(f"no source gave a frame in {now - self.stats.started:.1f} s ({self._trouble()})")

    def _trouble(self) -> str:
        """What went wrong with each source, for an error message."""
        parts = []
        for s in self.stats.sources:
            why = s.last_error or (f"{s.corrupt} unreadable frames" if s.corrupt else s.state)
            parts.append(f"{s.uri}: {why}")
        return "; ".join(parts)

    def _stop_by(self, reason: str) -> None:
        if not self.stats.stopped_by:
            self.stats.stopped_by = reason
        self._stop.set()

    def _infer(self, items: list[CapturedFrame]) -> list[FrameResult]:
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
                capture_timestamp=it.t_capture,
            )
            for j, it in enumerate(items)
        ]

    def _logits(self, small: np.ndarray) -> np.ndarray:
        # uint8 frames already checked and resized on capture: normalize the whole batch at
        # once, no NaN check needed
        return self.model.infer_chunked(self.model.preprocess.normalize(small))

    def _failed(self, items: list[CapturedFrame], exc: BaseException) -> list[FrameResult]:
        self.stats.failed_batches += 1
        for it in items:
            st = self.stats.sources[it.sid]
            st.errors += 1
            self._event("error", self.sources[it.sid].uri, f"frame {it.index}: inference failed: {first_line(exc)}")
        self._inference_error = first_line(exc)
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

    # -- events --------------------------------------------------------------------------
    def _emitter(self, uri: str) -> Callable[[str, str], None]:
        def emit(kind: str, message: str) -> None:
            self._event(kind, uri, message)

        return emit

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
