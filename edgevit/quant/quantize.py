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

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgevit.artifacts import check_output_path, read_onnx_info, sha256_file
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
    calib_dir: str | Path | None = None,
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
        calib_dir: where the calibration table and TensorRT cache go; default ``calib/``
            beside the INT8 model. Their names say what made them (:func:`table_tag`).
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
    # every output path is refused now if it cannot be written, not after calibrating
    check_output_path(out_path, "file", "INT8 model")
    calib_dir = Path(calib_dir) if calib_dir is not None else out_path.parent / "calib"
    check_output_path(calib_dir, "dir", "calibration folder")
    model_sha = sha256_file(model_path)
    budgeted = cfg.budget is not None or cfg.min_agreement is not None

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
        import onnx

        table = CalibrationTable.load(calib_table)
        table.check_model(model_sha, model_path)
        # where the table is applied: its SmoothQuant scales and means must fit this model
        table.validate(onnx.load(str(model_path)), where=f"calibration table {calib_table}")
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
        tag = table_tag(cfg, len(images), cfg.seed, data, budgeted)
        table_path, cache_path = table_paths(calib_dir, model_path, model_sha, tag)
    met, message = True, ""
    if budgeted:
        d = dataset()
        _, hold_idx = calibration_indices(len(d.train.images), cfg.num_images, cfg.holdout_images, cfg.seed)
        if log:
            log(f"sensitivity scan on {len(hold_idx)} held-out training images")
        report = choose_fallback(
            model_path, table, d.train.images[hold_idx], d.train.labels[hold_idx], info, cfg, progress=progress
        )
        met, message = report.met, report.message
        if calib_table is not None:  # never overwrite the reused table: write the budgeted one beside it
            seed = int(table.settings.get("seed", cfg.seed))
            tag = table_tag(cfg, table.num_images, seed, data, budgeted, method=table.method)
            table_path, cache_path = table_paths(calib_dir, model_path, model_sha, tag)
    if calib_table is None or budgeted:
        table.save(table_path)
        table.save_trt_cache(cache_path)
    summary = quantize_model(model_path, table, out_path, info, cfg)
    return QuantizeResult(out_path, table, table_path, cache_path, summary, budget_met=met, message=message)


def _settings_key(cfg: QuantizeConfig, method: str, data: str | None, budgeted: bool) -> dict[str, Any]:
    """The settings besides method, image count and seed that change a table's contents."""
    key: dict[str, Any] = {
        "percentile": cfg.percentile if method in ("percentile", "auto") else None,
        "bins": cfg.bins if method != "max" else None,
        "op_types": sorted(cfg.op_types),
        "smoothquant": cfg.smoothquant_alpha if cfg.smoothquant else None,
        "bias_correction": cfg.bias_correction,
        "data": data,
        "auto_images": cfg.auto_images if method == "auto" else None,
    }
    if budgeted:
        key.update(budget=cfg.budget, min_agreement=cfg.min_agreement, holdout=cfg.holdout_images)
    return key


def table_tag(
    cfg: QuantizeConfig,
    num_images: int,
    seed: int,
    data: str | None = None,
    budgeted: bool = False,
    method: str | None = None,
) -> str:
    """The settings part of a calibration table's file name, short but unique per table.

    ``<method>-n<images>-s<seed>`` (``percentile-n512-s0``); then ``-<6 hex digits>`` of
    every other setting that changes the table (percentile, bins, SmoothQuant alpha, bias
    correction, calibration data, budget, ...) when they differ from the defaults; then
    ``.budget`` for a table with a sensitivity fallback. Two runs with different settings
    never write over each other's table; the same settings find the same name.
    """
    method = method or cfg.method
    tag = f"{method}-n{num_images}-s{seed}"
    key = _settings_key(cfg, method, data, budgeted)
    if key != _settings_key(QuantizeConfig(method=method), method, None, False):
        tag += "-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:6]
    return tag + (".budget" if budgeted else "")
