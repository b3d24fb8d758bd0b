"""Counters, FPS and latency percentiles of a running stream, per source and overall.

Counters are written by a source's capture thread or the inference loop (failure counts
under the capture's lock, as the stall supervisor writes them too); readers may see a
value one frame old. Latency is measured per frame from the moment the source's reader
returned the frame (decoded: the time spent in the camera, the network and the decoder
is not in it) to the result (inference and top-k done, before the sinks), in ms. Percentiles over the whole run come
from a log-spaced histogram (1% resolution, fixed memory, so a week-long camera run
costs the same as a short one); the status line uses a window of recent frames.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FPS_WINDOW_S = 2.0  # per-source FPS is measured over the last two seconds of results
RECENT = 512  # frames in the rolling latency window of the status line


class LatencyHistogram:
    """Milliseconds in log-spaced bins 1% wide, from 1 us to about 28 hours."""

    LOW_MS = 1e-3
    RATIO = 1.01
    BINS = 2400

    _INV_LOG_RATIO = 1.0 / math.log(RATIO)

    def __init__(self) -> None:
        self.counts = [0] * self.BINS  # a list: one increment per frame costs less than numpy's
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, ms: float) -> None:
        i = 0 if ms <= self.LOW_MS else int(math.log(ms / self.LOW_MS) * self._INV_LOG_RATIO) + 1
        self.counts[i if i < self.BINS else self.BINS - 1] += 1
        self.count += 1
        self.total += ms
        if ms > self.max:
            self.max = ms

    @classmethod
    def merged(cls, parts: list[LatencyHistogram]) -> LatencyHistogram:
        """One histogram holding every value of ``parts``."""
        out = cls()
        for h in parts:
            out.counts = [a + b for a, b in zip(out.counts, h.counts)]
            out.count += h.count
            out.total += h.total
            out.max = max(out.max, h.max)
        return out

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100), as the upper edge of its bin (within 1%)."""
        if self.count == 0:
            return float("nan")
        rank = max(1, math.ceil(self.count * q / 100.0))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(self.LOW_MS * self.RATIO**i, self.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


@dataclass
class SourceStats:
    """What happened to one source. ``index`` is its position in the stream's sources."""

    index: int
    uri: str
    live: bool
    total: int | None = None  # frames in the file/folder, when known
    captured: int = 0  # frames read and handed to the queue
    dropped: int = 0  # stale frames of a live source replaced by a newer one
    corrupt: int = 0  # unreadable frames (counted and skipped)
    errors: int = 0  # frames inference failed on (counted and skipped)
    failures: int = 0  # failed attempts: opens and reads that failed, stalls
    stalls: int = 0  # times a live source was stuck in open or read for the stall timeout
    reopens: int = 0  # successful reopens after failures
    results: int = 0
    state: str = "opening"  # opening, running, reopening, ended, failed
    last_error: str = ""  # the error of the current outage ("" once frames flow again)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    _recent_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    _result_times: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))

    def record(self, latency_ms: float, now: float) -> None:
        self.results += 1
        self.latency.add(latency_ms)
        self._recent_ms.append(latency_ms)
        self._result_times.append(now)

    def fps(self, now: float | None = None) -> float:
        """Results per second over the last two seconds."""
        now = time.monotonic() if now is None else now
        times = [t for t in list(self._result_times) if now - t <= FPS_WINDOW_S]
        if len(times) < 2:
            return 0.0
        # n results are n-1 intervals; a source that went quiet decays towards 0
        span = times[-1] - times[0] if now - times[-1] < 0.5 else now - times[0]
        return (len(times) - 1) / max(span, 1e-9)

    def recent_percentile(self, q: float) -> float:
        recent = list(self._recent_ms)
        return float(np.percentile(recent, q)) if recent else float("nan")

    def to_dict(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "source": self.uri,
            "live": self.live,
            "state": self.state,
            "frames_total": self.total,
            "captured": self.captured,
            "results": self.results,
            "dropped": self.dropped,
            "corrupt": self.corrupt,
            "errors": self.errors,
            "failures": self.failures,
            "stalls": self.stalls,
            "reopens": self.reopens,
            "fps": round(self.results / elapsed_s, 2) if elapsed_s > 0 else 0.0,
            "latency_ms": _latency_dict(self.latency),
            "last_error": self.last_error,
        }


def _latency_dict(h: LatencyHistogram) -> dict[str, float | None]:
    def r(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 3)

    return {
        "p50": r(h.percentile(50)),
        "p90": r(h.percentile(90)),
        "p99": r(h.percentile(99)),
        "mean": r(h.mean),
        "max": r(h.max) if h.count else None,
    }


@dataclass
class StreamStats:
    """Stats of a whole stream: its sources, batches and the run's wall-clock span."""

    sources: list[SourceStats] = field(default_factory=list)
    batches: int = 0
    batched_frames: int = 0
    failed_batches: int = 0
    batch_waits: int = 0  # batches that waited for more frames
    vain_waits: int = 0  # ... and got none from the wait
    infer_s: float = 0.0  # time inside preprocessing + inference + top-k
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    stopped_by: str = ""  # "", "signal", "max_frames", "duration", "sink", "error"

    @property
    def latency(self) -> LatencyHistogram:
        """Every source's latencies together (merged on demand: one add per frame, not two)."""
        return LatencyHistogram.merged([s.latency for s in self.sources])

    @property
    def elapsed_s(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    @property
    def results(self) -> int:
        return sum(s.results for s in self.sources)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sources)

    def status_line(self) -> str:
        """One line: per-source FPS and recent latency, drops and trouble."""
        now = time.monotonic()
        parts = []
        for s in self.sources:
            text = f"{_short(s.uri)} {s.fps(now):.1f} fps"
            if s.results:
                text += f" {s.recent_percentile(50):.1f}/{s.recent_percentile(99):.1f} ms p50/p99"
            trouble = [
                f"{n} {what}"
                for n, what in (
                    (s.dropped, "dropped"),
                    (s.corrupt, "corrupt"),
                    (s.errors, "errors"),
                    (s.reopens, "reopens"),
                )
                if n
            ]
            if s.state in ("reopening", "failed"):
                trouble.append(s.state.upper())
            if trouble:
                text += " (" + ", ".join(trouble) + ")"
            parts.append(text)
        return " | ".join(parts)

    def summary(self) -> dict[str, Any]:
        """Everything, as JSON-ready data (what ``--stats`` writes)."""
        elapsed = self.elapsed_s
        return {
            "elapsed_s": round(elapsed, 3),
            "results": self.results,
            "fps": round(self.results / elapsed, 2) if elapsed > 0 else 0.0,
            "dropped": self.dropped,
            "batches": self.batches,
            "mean_batch": round(self.batched_frames / self.batches, 3) if self.batches else 0.0,
            "failed_batches": self.failed_batches,
            "batch_waits": self.batch_waits,
            "vain_waits": self.vain_waits,
            "inference_busy": round(self.infer_s / elapsed, 3) if elapsed > 0 else 0.0,
            "latency_ms": _latency_dict(self.latency),
            "stopped_by": self.stopped_by or "end of sources",
            "sources": [s.to_dict(elapsed) for s in self.sources],
        }

    def format_summary(self) -> str:
        """The human summary printed at the end of a run."""
        d = self.summary()
        lat = d["latency_ms"]
        lines = [
            f"{d['results']} frames in {d['elapsed_s']:.1f} s ({d['fps']:.1f} fps), "
            f"mean batch {d['mean_batch']:.2f}, stopped by {d['stopped_by']}",
        ]
        if lat["p50"] is not None:
            lines.append(
                f"latency capture->result: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms"
            )
        for s in d["sources"]:
            line = (
                f"  {s['source']}: {s['results']} results, {s['fps']:.1f} fps, "
                f"{s['dropped']} dropped, {s['corrupt']} corrupt"
            )
            if s["errors"] or s["failures"] or s["stalls"] or s["reopens"]:
                line += (
                    f", {s['errors']} errors, {s['failures']} failures, {s['stalls']} stalls, {s['reopens']} reopens"
                )
            if s["last_error"]:
                line += f"; last error: {s['last_error']}"
            lines.append(line)
        return "\n".join(lines)


def _short(uri: str, width: int = 28) -> str:
    return uri if len(uri) <= width else "..." + uri[-(width - 3) :]
