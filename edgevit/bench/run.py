"""``edgevit bench``: every backend and baseline timed side by side in one process, in
interleaved rounds, so that each reported ratio compares numbers measured under the same
machine load.

What one run does:

1. load every target (artifact x backend, plus the baselines built from the FP32 model;
   :mod:`edgevit.bench.targets`) and record the resident memory that loading it added;
2. warm each (target, batch size) case up;
3. for ``rounds`` rounds, run every case for at least ``min_time`` seconds and
   ``min_calls`` calls, starting each round at a different case so slow drifts of the
   machine's load spread over all of them; the load average is recorded every round
   (:mod:`edgevit.bench.timing`);
4. report images/s (median over rounds), latency per batch (p50/p90/p99 over all calls),
   memory, and the ratios between targets (:mod:`edgevit.bench.ratios`), all from this
   run's numbers.

Inputs are random uint8 images preprocessed once before timing: preprocessing is measured
separately (``preprocess`` section), never inside an inference timing. Acceptance targets
for these numbers are not the package's: ``benchmarks/check_targets.py`` checks a report
against ``benchmarks/targets.json``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from edgevit import __version__
from edgevit.bench.measure import peak_rss_mb, summarize
from edgevit.bench.memory import measure_memory
from edgevit.bench.ratios import compute_ratios
from edgevit.bench.settings import BenchConfig
from edgevit.bench.targets import build_targets
from edgevit.bench.timing import PREPROCESS_BATCH, make_cases, measure_preprocess, preprocess_specs, time_cases
from edgevit.sysinfo import cpu_count, cpu_model, describe_machine

__all__ = ["SCHEMA", "BenchConfig", "compute_ratios", "run_bench"]

SCHEMA = "edgevit-bench/2"  # 2: no "claims" (acceptance targets live in benchmarks/)


def run_bench(cfg: BenchConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure everything ``cfg`` asks for; returns the JSON-ready report."""
    from tqdm.auto import tqdm

    log = log or (lambda _msg: None)
    threads = cfg.threads or cpu_count()
    load_start = os.getloadavg()
    targets, notes = build_targets(cfg, threads, log)
    cases = make_cases(targets, cfg.batch_sizes)

    def bar(desc: str, total: int) -> Any:
        return tqdm(total=total, desc=desc, leave=False)

    try:
        load_rounds = time_cases(
            cases, cfg.rounds, cfg.min_time, cfg.min_calls, cfg.warmup, progress=bar if progress else None
        )
    finally:
        for t in targets:
            t.close()
            closer = getattr(t.timer, "close", None)
            if closer is not None:
                closer()

    if cfg.memory:
        for t in tqdm(targets, desc="memory", disable=not progress, leave=False):
            t.memory = measure_memory(t.spec, cfg.batch_sizes, threads) if t.spec else {"error": "no spec"}
    results = []
    for case in cases:
        st = summarize(case.rounds_ms, case.batch)
        mem = case.target.memory.get("batches", {}).get(str(case.batch), {})
        results.append(
            {
                "target": case.target.id,
                "group": case.target.group,
                "kind": case.target.kind,
                "backend": case.target.backend,
                "precision": case.target.precision,
                "batch": case.batch,
                **st.to_dict(),
                "mem_mb": mem.get("added_mb"),
                "peak_rss_mb": mem.get("peak_rss_mb"),
            }
        )

    log("timing preprocessing")
    preprocess_rows = measure_preprocess(
        preprocess_specs(targets), PREPROCESS_BATCH, cfg.preprocess_rounds, min(cfg.min_time, 0.5)
    )

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "edgevit": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "description": describe_machine(),
            "cpu": cpu_model(),
            "cores": cpu_count(),
            "python": platform.python_version(),
            "versions": _versions(),
        },
        "threads": threads,
        "loadavg": {
            "start": [round(v, 2) for v in load_start],
            "rounds": load_rounds,
            "end": [round(v, 2) for v in os.getloadavg()],
        },
        "settings": {
            "batch_sizes": list(cfg.batch_sizes),
            "rounds": cfg.rounds,
            "min_time_s": cfg.min_time,
            "min_calls": cfg.min_calls,
            "warmup": cfg.warmup,
            "inputs": "random uint8 images, preprocessed once before timing (preprocessing timed separately)",
            "throughput": "images per second of summed call time, median over the interleaved rounds",
            "latency": "per call (one batch), percentiles over every call of every round",
            "timer": "time.perf_counter around each call; CUDA events on the engine's stream for TensorRT",
            "memory": (
                "measured apart, in a fresh process per target that imports its libraries, loads it and runs "
                "the batch sizes in ascending order: mem_mb = peak RSS above the pre-load peak after this batch "
                "size, peak_rss_mb = that process's peak RSS (Python and libraries included)"
            ),
        },
        "notes": list(cfg.notes) + notes,
        "targets": [t.describe(threads) for t in targets],
        "results": results,
        "preprocess": preprocess_rows,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    report["ratios"] = compute_ratios(report)
    return report


def _versions() -> dict[str, str]:
    out = {"numpy": np.__version__}
    for name in ("onnxruntime", "openvino", "torch", "tensorrt"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = str(getattr(mod, "__version__", "?"))
    return out
