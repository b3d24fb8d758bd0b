"""Timing and memory primitives: wall-clock timers for CPU backends, CUDA-event timers for
TensorRT engines, resident-memory sampling, and the statistics every result reports."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import BackendError, first_line

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Current resident set size of this process, in MiB (Linux ``/proc``; else the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class WallTimer:
    """Times one call with ``time.perf_counter`` (the call returns when results are on the host)."""

    method = "perf_counter"

    def time(self, fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


class CudaEventTimer:
    """Times one call with CUDA events recorded on the runner's stream, around the host->device
    copy, the engine and the device->host copy (what the TensorRT runner enqueues).

    Args:
        cudart: ``cuda.bindings.runtime`` (or a test double with the same functions).
        stream: the stream the runner enqueues its work on.
    """

    method = "cuda_events"

    def __init__(self, cudart: Any, stream: Any):
        from edgevit.trt.cudart import check

        self._check = check
        self.cudart = cudart
        self.stream = stream
        self.start = check(cudart.cudaEventCreate(), "cudaEventCreate")
        self.end = check(cudart.cudaEventCreate(), "cudaEventCreate")

    def time(self, fn: Callable[[], Any]) -> float:
        c, check = self.cudart, self._check
        check(c.cudaEventRecord(self.start, self.stream), "cudaEventRecord")
        fn()  # the runner synchronizes its stream before returning
        check(c.cudaEventRecord(self.end, self.stream), "cudaEventRecord")
        check(c.cudaEventSynchronize(self.end), "cudaEventSynchronize")
        return float(check(c.cudaEventElapsedTime(self.start, self.end), "cudaEventElapsedTime"))

    def close(self) -> None:
        for ev in (self.start, self.end):
            self.cudart.cudaEventDestroy(ev)


def timer_for(runner: Any) -> WallTimer | CudaEventTimer:
    """CUDA events for a TensorRT runner with a live stream, the wall clock otherwise."""
    stream = getattr(runner, "_stream", None)
    cudart = getattr(runner, "cudart", None)
    if stream is not None and cudart is not None and hasattr(cudart, "cudaEventCreate"):
        try:
            return CudaEventTimer(cudart, stream)
        except BackendError:
            return WallTimer()
    return WallTimer()


@dataclass
class Stats:
    """Latency statistics of the calls of one case, pooled over every round."""

    calls: int
    throughput: float  # images/s: the median over rounds of images / summed call time
    throughput_rounds: list[float]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "throughput": round(self.throughput, 3),
            "throughput_rounds": [round(t, 3) for t in self.throughput_rounds],
            "latency_ms": {"p50": round(self.p50_ms, 4), "p90": round(self.p90_ms, 4), "p99": round(self.p99_ms, 4)},
            "mean_ms": round(self.mean_ms, 4),
        }


def summarize(rounds_ms: list[list[float]], batch: int) -> Stats:
    """Statistics of per-call latencies (ms) grouped by round, for calls of ``batch`` images."""
    rounds = [r for r in rounds_ms if r]
    if not rounds:
        raise ValueError("no timed calls to summarize")
    per_round = [batch * len(r) / (sum(r) / 1e3) for r in rounds]
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds])
    p50, p90, p99 = np.percentile(pooled, [50, 90, 99])
    return Stats(
        calls=int(pooled.size),
        throughput=float(np.median(per_round)),
        throughput_rounds=per_round,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(pooled.mean()),
    )


def plain_ort_session(path: str | Path, threads: int) -> Any:
    """A plain ``onnxruntime.InferenceSession`` with ONNX Runtime's own defaults (intra-op
    threads that spin, all graph optimizations, no edgevit rewrites): what a user who picks
    ONNX Runtime instead of edgevit runs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BackendError(f"ONNX Runtime cannot load {path} ({first_line(exc)})") from exc


def plain_openvino_model(path: str | Path, threads: int) -> Any:
    """OpenVINO's CPU plugin compiling ``path`` (ONNX or IR ``.xml``) with its own default hints
    (only the thread count set): what a user who picks OpenVINO instead of edgevit runs. On CPUs
    with BF16 units (AVX-512 BF16, AMX) its float parts then run in BF16."""
    from edgevit.runtime.openvino_backend import import_openvino

    ov = import_openvino()
    try:
        core = ov.Core()
        return core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    except Exception as exc:
        raise BackendError(f"OpenVINO cannot load {path} ({first_line(exc)})") from exc
