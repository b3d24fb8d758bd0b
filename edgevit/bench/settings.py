"""What one ``edgevit bench`` run measures and for how long."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgevit.errors import EdgeVitError


@dataclass
class BenchConfig:
    """What to measure and how long.

    Args:
        artifacts: ``.onnx`` models (FP32 and/or INT8) and TensorRT ``.engine``/``.plan`` files.
        checkpoints: edgevit checkpoints: each adds a PyTorch eager FP32 baseline (imports torch).
        backends: backends for ``.onnx`` artifacts (``onnxruntime``, ``openvino``); ``None``:
            ONNX Runtime, plus OpenVINO when it is installed. Engines always run on TensorRT.
        batch_sizes: images per call.
        threads: CPU threads for every CPU backend (``None``: every core), stated in the output.
        baselines: build ONNX Runtime's default ``quantize_static`` INT8 from the FP32 model.
        variants: also build and time other Q/DQ placements (see :mod:`edgevit.bench.variants`).
        rounds, min_time, min_calls, warmup: how long each case runs.
        memory: measure peak memory, each target in a fresh process (after the timing).
        workdir: where built models go (baselines, variants).
        notes: lines copied into the report (e.g. "random weights").
    """

    artifacts: list[Path] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    backends: list[str] | None = None
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    threads: int | None = None
    baselines: bool = True
    variants: bool = False
    rounds: int = 5
    min_time: float = 1.0
    min_calls: int = 3
    warmup: int = 2
    preprocess_rounds: int = 3
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "edgevit-bench")
    memory: bool = True
    calib_images: int = 16
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise EdgeVitError(f"batch sizes must be positive integers, got {self.batch_sizes}")
        if self.rounds < 1 or self.min_calls < 1 or self.min_time < 0 or self.warmup < 0:
            raise EdgeVitError("rounds and min_calls must be at least 1, min_time and warmup not negative")
        if self.threads is not None and self.threads < 1:
            raise EdgeVitError(f"threads must be at least 1, got {self.threads}")
