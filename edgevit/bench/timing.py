"""Timing of bench targets and of preprocessing: warm-up, then interleaved rounds.

Every (target, batch size) case runs for at least ``min_time`` seconds and ``min_calls``
calls per round; each round starts at a different case so that slow drifts of the machine's
load spread over all of them. Inputs are preprocessed once, before any timing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgevit.bench.measure import WallTimer, summarize
from edgevit.bench.targets import Target
from edgevit.bench.variants import random_images
from edgevit.preprocess import Preprocess

# Input shapes whose preprocessing every run times, besides its models' own: CIFAR-sized
# (32 px) and ImageNet-sized (224 px) RGB frames, so runs on different models compare.
PREPROCESS_REFERENCE = ((32, 3), (224, 3))  # (size, channels)
PREPROCESS_BATCH = 32


@dataclass
class Case:
    """One target at one batch size, and its per-call times (ms) by round."""

    target: Target
    batch: int
    x: np.ndarray
    rounds_ms: list[list[float]] = field(default_factory=list)


def make_cases(targets: list[Target], batch_sizes: list[int]) -> list[Case]:
    """Every (target, batch size) a target can run (a TensorRT profile caps its batch), with one
    preprocessed random batch per (model group, batch size) shared by the group's targets."""
    inputs: dict[tuple[str, int], np.ndarray] = {}
    for t in targets:
        for b in batch_sizes:
            if (t.group, b) not in inputs:
                inputs[(t.group, b)] = t.preprocess(random_images(t.preprocess, b, seed=b))
    return [
        Case(t, b, inputs[(t.group, b)])
        for t in targets
        for b in batch_sizes
        if t.max_batch is None or b <= t.max_batch
    ]


def run_case(case: Case, min_time: float, min_calls: int) -> list[float]:
    """One round of one case: per-call times in ms."""
    timer, fn, x = case.target.timer, case.target.infer, case.x
    times: list[float] = []
    spent = 0.0
    while len(times) < min_calls or spent < min_time * 1e3:
        ms = timer.time(lambda: fn(x))
        times.append(ms)
        spent += ms
    return times


def time_cases(
    cases: list[Case],
    rounds: int,
    min_time: float,
    min_calls: int,
    warmup: int,
    progress: Callable[[str, int], Any] | None = None,
) -> list[list[float]]:
    """Warm every case up, then time ``rounds`` interleaved rounds into ``case.rounds_ms``;
    returns the load average (1, 5, 15 min) after each round.

    Args:
        progress: ``progress(desc, total)`` returns a bar with ``update()`` and ``close()``
            (tqdm's signature), or ``None`` for none.
    """
    bar = progress("warm-up", len(cases)) if progress else None
    for case in cases:
        for _ in range(max(1, warmup)):
            case.target.infer(case.x)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    load_rounds = []
    bar = progress("bench", rounds * len(cases)) if progress else None
    for r in range(rounds):
        shift = (r * len(cases)) // rounds
        for case in cases[shift:] + cases[:shift]:
            case.rounds_ms.append(run_case(case, min_time, min_calls))
            if bar is not None:
                bar.update()
        load_rounds.append([round(v, 2) for v in os.getloadavg()])
    if bar is not None:
        bar.close()
    return load_rounds


def preprocess_specs(targets: list[Target]) -> list[tuple[int, int, tuple[int, int]]]:
    """(size, channels, frame HxW) to time: each model's input at its own size and from
    640x480 frames (a resize), then the reference shapes."""
    specs: list[tuple[int, int, tuple[int, int]]] = []
    for t in targets:
        spec = (t.preprocess.size, t.preprocess.channels, (t.preprocess.size, t.preprocess.size))
        if spec not in specs:
            specs.append(spec)
            specs.append((t.preprocess.size, t.preprocess.channels, (480, 640)))
    for size, channels in PREPROCESS_REFERENCE:
        if (size, channels, (size, size)) not in specs:
            specs.append((size, channels, (size, size)))
    return specs


def measure_preprocess(
    specs: list[tuple[int, int, tuple[int, int]]], batch: int, rounds: int, min_time: float
) -> list[dict[str, Any]]:
    """images/s of ``Preprocess`` on uint8 frames, per (size, channels, frame HxW), interleaved."""
    cases = []
    for size, channels, (h, w) in specs:
        pre = Preprocess(size, channels, (0.5,) * channels, (0.25,) * channels)
        frames = np.random.default_rng(0).integers(0, 256, size=(batch, h, w, channels), dtype=np.uint8)
        pre(frames)  # warm up (imports cv2 when resizing)
        cases.append((size, channels, (h, w), pre, frames, []))
    timer = WallTimer()
    for _ in range(rounds):
        for case in cases:
            pre, frames, times = case[3], case[4], case[5]
            spent = 0.0
            while len(times) < 3 or spent < min_time * 1e3:
                ms = timer.time(lambda p=pre, f=frames: p(f))
                times.append(ms)
                spent += ms
    rows = []
    for size, channels, (h, w), _, _, times in cases:
        st = summarize([times], batch)
        rows.append(
            {
                "size": size,
                "channels": channels,
                "frame": [h, w, channels],
                "batch": batch,
                "resize": (h, w) != (size, size),
                "images_per_s": round(st.throughput, 1),
                "ms_per_batch_p50": round(st.p50_ms, 4),
            }
        )
    return rows
