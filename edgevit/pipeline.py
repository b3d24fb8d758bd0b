"""The main job: train -> export -> quantize -> validate into one run folder, with a
summary of accuracy, agreement, sizes and speed of the FP32 and INT8 models.

A run folder always holds one run: the job works in a hidden folder beside it
(``.<name>.partial-*``) and puts it in place whole at the end
(:func:`edgevit.artifacts.atomic_output_dir`). An interrupted or failed run leaves the
previous run as it was, never a new ``model.onnx`` beside an old ``model.int8.onnx`` and
``summary.json``. Rerunning into a folder replaces the previous run (with what was made from
it, such as ``layers/``); a folder holding other files is refused before training starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import atomic_output_dir, check_output_path, write_json_atomic, write_text_atomic
from edgevit.quant.config import QuantizeConfig
from edgevit.sysinfo import describe_machine
from edgevit.train import TrainConfig

# What a run folder holds (and what `edgevit inspect` adds to it): what a new run may replace.
RUN_OUTPUTS = frozenset(
    {
        "checkpoint.pt",
        "last.pt",
        "metrics.json",
        "training_curve.png",
        "model.onnx",
        "model.int8.onnx",
        "calib",
        "validation.json",
        "validation.md",
        "summary.json",
        "summary.md",
        "layers",
    }
)


@dataclass
class PipelineResult:
    run_dir: Path
    summary: dict[str, Any]

    def table(self) -> str:
        return summary_table(self.summary)


def measure_throughput(model: Any, x: np.ndarray, batch_size: int = 32, min_seconds: float = 1.0) -> float:
    """Images per second of ``model.logits`` on a preprocessed batch (inference only)."""
    x = x[:batch_size]
    model.logits(x)  # warm-up
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_seconds or n < 3 * len(x):
        model.logits(x)
        n += len(x)
    return n / elapsed


def run_pipeline(
    out_dir: str | Path,
    train_cfg: TrainConfig | None = None,
    quant_cfg: QuantizeConfig | None = None,
    calib_dir: str | Path | None = None,
    max_drop: float = 1.0,
    min_agreement: float = 98.0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Train, export, quantize and validate into ``out_dir``, replacing a previous run there.

    Args:
        out_dir: the run folder; written whole at the end (see the module docstring).
        train_cfg, quant_cfg: training and calibration settings.
        calib_dir: where the calibration table and TensorRT cache go; default
            ``<out_dir>/calib``.
        max_drop, min_agreement: the validation gates.
        progress: progress bars.
        log: called with one status line per stage.
    """
    say = log or (lambda _msg: None)
    train_cfg = train_cfg or TrainConfig()
    quant_cfg = quant_cfg or QuantizeConfig()
    run_dir = check_output_path(out_dir, "dir", "run folder")
    if calib_dir is not None:
        check_output_path(calib_dir, "dir", "calibration folder")
    with atomic_output_dir(run_dir, "run folder", replaceable=RUN_OUTPUTS.__contains__) as work:
        summary = _run(work, run_dir, train_cfg, quant_cfg, calib_dir, max_drop, min_agreement, progress, say)
    return PipelineResult(run_dir, summary)


def _run(
    work: Path,
    run_dir: Path,
    train_cfg: TrainConfig,
    quant_cfg: QuantizeConfig,
    calib_dir: str | Path | None,
    max_drop: float,
    min_agreement: float,
    progress: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The pipeline's stages, writing into ``work``; paths recorded are those in ``run_dir``."""
    from edgevit import runtime
    from edgevit.data import load_dataset
    from edgevit.export import export_onnx
    from edgevit.quant.quantize import quantize_onnx
    from edgevit.train import train
    from edgevit.validate import validate

    def final(path: Path) -> Path:
        """Where a file written in ``work`` will be once the run is in place."""
        try:
            return run_dir / Path(path).relative_to(work)
        except ValueError:
            return Path(path)

    calib = work / "calib"
    if calib_dir is not None:
        try:  # a calibration folder inside the run folder moves with it
            calib = work / Path(calib_dir).resolve().relative_to(run_dir.resolve())
        except ValueError:
            calib = Path(calib_dir)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    say(f"[1/4] training {train_cfg.preset} on {train_cfg.data} ({train_cfg.epochs} epochs) -> {run_dir}")
    t = time.perf_counter()
    trained = train(train_cfg, work, progress=progress)
    timings["train_s"] = time.perf_counter() - t

    say("[2/4] exporting FP32 ONNX and checking ONNX Runtime against PyTorch")
    t = time.perf_counter()
    fp32_path = work / "model.onnx"
    exported = export_onnx(trained.checkpoint, fp32_path)
    timings["export_s"] = time.perf_counter() - t

    say(f"[3/4] calibrating ({quant_cfg.method}) and writing the INT8 Q/DQ model")
    t = time.perf_counter()
    quantized = quantize_onnx(fp32_path, work / "model.int8.onnx", quant_cfg, calib_dir=calib, progress=progress)
    timings["quantize_s"] = time.perf_counter() - t

    say("[4/4] validating INT8 against FP32 on the test split")
    t = time.perf_counter()
    with runtime.load(fp32_path) as ref, runtime.load(quantized.path) as cand:
        ds = load_dataset(train_cfg.data, preprocess=ref.info.preprocess)
        report = validate(
            ref,
            cand,
            ds.test.images,
            ds.test.labels,
            f"{ds.source}:test",
            max_drop=max_drop,
            min_agreement=min_agreement,
        )
        report.save(work)
        timings["validate_s"] = time.perf_counter() - t
        x = ref.preprocess(ds.test.images)
        fp32_ips = measure_throughput(ref, x)
        int8_ips = measure_throughput(cand, x)
    timings["total_s"] = time.perf_counter() - t_start

    summary = {
        "run_dir": str(run_dir),
        "data": ds.source,
        "preset": train_cfg.preset,
        "machine": describe_machine(),
        "test_images": report.num_images,
        "fp32_top1": report.reference.top1,
        "int8_top1": report.candidate.top1,
        "drop_points": report.drop,
        "agreement": report.agreement,
        "mean_kl": report.mean_kl,
        "fp32_size_bytes": fp32_path.stat().st_size,
        "int8_size_bytes": quantized.path.stat().st_size,
        "fp32_images_per_s": fp32_ips,
        "int8_images_per_s": int8_ips,
        "throughput_batch": 32,
        "export_max_abs_diff": exported.max_abs_diff,
        "calibration": {"method": quantized.table.method, "images": quantized.table.num_images},
        "artifacts": {
            "checkpoint": str(final(trained.checkpoint)),
            "fp32_onnx": str(final(fp32_path)),
            "int8_onnx": str(final(quantized.path)),
            "calibration_table": str(final(quantized.table_path)),
            "tensorrt_cache": str(final(quantized.cache_path)),
            "report": str(run_dir / "validation.md"),
            "training_curve": str(run_dir / "training_curve.png"),
        },
        "passed": report.passed,
        "failures": report.failures,
        "timings": timings,
    }
    write_json_atomic(work / "summary.json", summary, what="summary")
    write_text_atomic(work / "summary.md", summary_table(summary) + "\n", what="summary")
    return summary


def summary_table(s: dict[str, Any]) -> str:
    mb = 1 / (1024 * 1024)
    rows = [
        ("", "FP32", "INT8"),
        ("test top-1", f"{s['fp32_top1']:.2f}%", f"{s['int8_top1']:.2f}%"),
        ("model size", f"{s['fp32_size_bytes'] * mb:.2f} MB", f"{s['int8_size_bytes'] * mb:.2f} MB"),
        (
            f"images/s (batch {s['throughput_batch']})",
            f"{s['fp32_images_per_s']:.0f}",
            f"{s['int8_images_per_s']:.0f}",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    verdict = "passed" if s["passed"] else "FAILED: " + "; ".join(s["failures"])
    lines += [
        "",
        f"INT8 drop {s['drop_points']:+.2f} points, top-1 agreement {s['agreement']:.2f}%, "
        f"mean KL {s['mean_kl']:.2g} on {s['test_images']} test images ({s['data']}): {verdict}",
        f"machine: {s['machine']}; total time {s['timings']['total_s']:.0f} s",
    ]
    return "\n".join(lines)
