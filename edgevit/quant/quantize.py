"""``edgevit quantize``: FP32 ONNX in, INT8 Q/DQ ONNX + calibration table + TensorRT cache out.

The stage in order: draw calibration images from the training split
(:mod:`~edgevit.quant.calibrate`), or reuse a calibration table; with an accuracy budget,
the sensitivity scan and fallback (:mod:`~edgevit.quant.sensitivity`); then the Q/DQ model
(:mod:`~edgevit.quant.writer`). The policy it writes, the one TensorRT's explicit
quantization wants:

* signed INT8, symmetric (zero point 0), weights per output channel, activations per tensor;
* Q/DQ only on the inputs of MatMul/Gemm/Conv (the two attention batch matmuls
  included); LayerNorm, Softmax, GELU and the residual Adds stay in floating point, and so
  do biases and the outputs of the weighted ops.

The result is checked node by node against those rules (:mod:`~edgevit.quant.rules`)
before it is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgevit.artifacts import read_onnx_info, sha256_file
from edgevit.data import load_dataset
from edgevit.errors import DataError, EdgeVitError, QuantizationError
from edgevit.quant.calibrate import calibrate, calibration_indices
from edgevit.quant.config import QuantizeConfig, QuantizeResult
from edgevit.quant.sensitivity import choose_fallback
from edgevit.quant.table import CalibrationTable, table_paths
from edgevit.quant.writer import quantize_model


def quantize_onnx(
    model_path: str | Path,
    out_path: str | Path | None = None,
    cfg: QuantizeConfig | None = None,
    calib_dir: str | Path = "calib",
    data: str | None = None,
    calib_table: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Calibrate (or reuse ``calib_table``) and write the INT8 Q/DQ model.

    Args:
        model_path: FP32 ONNX from ``edgevit export``.
        out_path: INT8 model path; default ``<model>.int8.onnx`` next to the input.
        cfg: calibration and quantization settings.
        calib_dir: where the calibration table and TensorRT cache go.
        data: calibration image source; default: the data the model was trained on.
        calib_table: reuse this table instead of calibrating (must match the model's hash).
    """
    cfg = cfg or QuantizeConfig()
    model_path = Path(model_path)
    info = read_onnx_info(model_path)
    if info.precision != "fp32":
        raise QuantizationError(
            f"{model_path} is already {info.precision}; quantize the FP32 model from `edgevit export`"
        )
    out_path = Path(out_path) if out_path else model_path.with_name(model_path.stem + ".int8.onnx")
    if out_path.resolve() == model_path.resolve():
        raise EdgeVitError("the INT8 output would overwrite the FP32 model; choose another --output")
    model_sha = sha256_file(model_path)

    ds = None

    def dataset() -> Any:
        nonlocal ds
        if ds is None:
            source = data or info.data
            if not source:
                raise DataError(f"{model_path} does not say which data it was trained on; pass --data DIR")
            try:
                ds = load_dataset(source, preprocess=info.preprocess)
            except DataError as exc:
                raise DataError(f"cannot load calibration images from {source!r} ({exc}); pass --data") from exc
        return ds

    if calib_table is not None:
        table = CalibrationTable.load(calib_table)
        table.check_model(model_sha, model_path)
        table_path = Path(calib_table)
        cache_path = table_path.with_suffix(".cache")
        if not cache_path.exists():
            table.save_trt_cache(cache_path)
    else:
        d = dataset()
        calib_idx, _ = calibration_indices(len(d.train.images), cfg.num_images, cfg.holdout_images, cfg.seed)
        images = d.train.images[calib_idx]
        if log:
            log(f"calibrating on {len(images)} training images of {d.source} ({cfg.method})")
        table = calibrate(model_path, images, info, cfg, image_source=f"{d.source}:train", progress=progress)
        budgeted = cfg.budget is not None or cfg.min_agreement is not None
        tag = cfg.method + (".budget" if budgeted else "")
        table_path, cache_path = table_paths(calib_dir, model_path, model_sha, tag)
    met, message = True, ""
    if cfg.budget is not None or cfg.min_agreement is not None:
        d = dataset()
        _, hold_idx = calibration_indices(len(d.train.images), cfg.num_images, cfg.holdout_images, cfg.seed)
        if log:
            log(f"sensitivity scan on {len(hold_idx)} held-out training images")
        report = choose_fallback(
            model_path, table, d.train.images[hold_idx], d.train.labels[hold_idx], info, cfg, progress=progress
        )
        met, message = report.met, report.message
        if calib_table is not None:  # never overwrite the reused table: write the budgeted one beside it
            table_path, cache_path = table_paths(calib_dir, model_path, model_sha, table.method + ".budget")
    if calib_table is None or cfg.budget is not None or cfg.min_agreement is not None:
        table.save(table_path)
        table.save_trt_cache(cache_path)
    summary = quantize_model(model_path, table, out_path, info, cfg)
    return QuantizeResult(out_path, table, table_path, cache_path, summary, budget_met=met, message=message)
