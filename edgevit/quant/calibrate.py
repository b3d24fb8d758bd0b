"""Calibration: one pass of the FP32 model over training images, every range method's
bound per tensor, and the offline edits (SmoothQuant, bias correction) measured on the way.

The pass itself is :func:`edgevit.quant.stats.collect_stats`; this module decides what to
measure, in which order, and turns the statistics into a
:class:`~edgevit.quant.table.CalibrationTable`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import ArtifactInfo, sha256_file
from edgevit.errors import DataError, QuantizationError
from edgevit.quant.config import QuantizeConfig
from edgevit.quant.table import CalibrationTable, TensorRange

# A Softmax output's bound is never below this percentile of its values. Probabilities are
# heavy-tailed: clipping at 99.99% (or by entropy/mse) cuts the large attention weights that
# carry the attention, while the plain maximum rounds the many small ones coarsely; 99.999% did
# better than both on the benchmark models (benchmarks/quant_accuracy.md).
SOFTMAX_FLOOR_PERCENTILE = 99.999


def input_range(model: Any, preprocess: Any, result: Any) -> dict[str, float]:
    """The network input's symmetric bound: exactly what the preprocessing can produce from
    uint8 pixels (never clipped: an image's brightest pixels are often what tells classes
    apart), for the graph input and its value-preserving reshapes."""
    mean, std = np.asarray(preprocess.mean, np.float64), np.asarray(preprocess.std, np.float64)
    lo, hi = (0.0 - mean) / std, (1.0 - mean) / std
    bound = float(max(np.abs(lo).max(), np.abs(hi).max()))
    name = model.graph.input[0].name
    names = [name] + [a for a, root in result.aliases.items() if root == name]
    return {n: bound for n in names if n in result.stats or n in result.aliases}


def softmax_floors(model: Any, result: Any) -> dict[str, float]:
    """Softmax output (and its reshapes) -> the lowest bound it may get (see SOFTMAX_FLOOR_PERCENTILE)."""
    out = {}
    for n in model.graph.node:
        if n.op_type == "Softmax" and n.output[0] in result.stats:
            out[n.output[0]] = min(1.0, result.stats[n.output[0]].amax_for("percentile", SOFTMAX_FLOOR_PERCENTILE))
    out.update({a: out[root] for a, root in result.aliases.items() if root in out})
    return out


def check_images(images: np.ndarray, source: str = "calibration set") -> None:
    """Refuse images with NaN/Inf, naming the first offending image."""
    if np.issubdtype(images.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1))
        if bad.size:
            raise DataError(
                f"image {int(bad[0])} of the {source} contains NaN or Inf ({bad.size} such images); fix or remove it"
            )


def float_nodes(model: Any, settings: dict[str, Any]) -> list[str]:
    """Weighted nodes the policy recorded in ``settings`` keeps in floating point (the attention
    batch matmuls, unless ``attention`` is ``int8``; tables without the key predate the choice
    and quantized them)."""
    from edgevit.quant.graph import attention_matmuls

    return attention_matmuls(model) if settings.get("attention", "int8") == "float" else []


def _activation_consumers(model: Any, op_types: tuple[str, ...], exclude: list[str]) -> dict[str, set[str]]:
    consumers_of: dict[str, set[str]] = {}
    skip = set(exclude)
    for node in model.graph.node:
        if node.name in skip:
            continue
        for i, name in enumerate(node.input):
            if node.op_type in op_types and (i == 0 or (node.op_type == "MatMul" and i == 1)):
                consumers_of.setdefault(name, set()).add(node.op_type)
    return consumers_of


def prepare_model(model: Any, transforms: dict[str, Any]) -> list[str]:
    """Apply a table's recorded offline edits to ``model`` (in place); return what was done."""
    from edgevit.quant.bias_correction import bias_correct
    from edgevit.quant.smoothquant import apply_channel_scales

    done = []
    sq = transforms.get("smoothquant")
    if sq:
        apply_channel_scales(model, {k: np.asarray(v, np.float32) for k, v in sq["scales"].items()})
        done.append("smoothquant")
    bc = transforms.get("bias_correction")
    if bc:
        bias_correct(model, {k: np.asarray(v, np.float64) for k, v in bc["input_means"].items()})
        done.append("bias_correction")
    return done


def progress_bar(progress: bool, desc: str, total: int | None = None) -> Callable[[Any], Any]:
    from tqdm.auto import tqdm

    return lambda it: tqdm(it, desc=desc, total=total, disable=not progress, leave=False)


def calibrate(
    model_path: str | Path,
    images: np.ndarray,
    info: ArtifactInfo,
    cfg: QuantizeConfig,
    image_source: str,
    progress: bool = True,
) -> CalibrationTable:
    """Measure every float tensor of ``model_path`` on ``images`` in one pass and choose
    each quantized tensor's range with ``cfg.method``."""
    import onnx

    from edgevit.quant.graph import linear_weight
    from edgevit.quant.smoothquant import find_layernorm_pairs, smoothing_scales
    from edgevit.quant.stats import capped_batch_size, collect_stats, iter_batches

    if len(images) < 2:
        raise DataError(f"the calibration set has {len(images)} image(s); it needs at least 2 (512 recommended)")
    check_images(images)
    model_path = Path(model_path)
    model = onnx.load(str(model_path))
    batch = capped_batch_size(model, cfg.batch_size, cfg.batch_bytes)
    steps = -(-len(images) // batch)
    transforms: dict[str, Any] = {}
    if cfg.smoothquant:
        # SmoothQuant's own statistic (per-channel maxima of the LayerNorm outputs) decides
        # the scales, which change those tensors: a light first pass measures only them.
        pairs = find_layernorm_pairs(model)
        # SmoothQuant's statistic is measured where the weighted ops read: the LayerNorm
        # output, or the class token gathered from it for the head
        inputs = list(dict.fromkeys(t for p in pairs for t in p.inputs))
        measured = list(dict.fromkeys([*inputs, *(p.output for p in pairs)]))
        first = collect_stats(
            model,
            progress_bar(progress, "smoothquant maxima", steps)(iter_batches(images, info.preprocess, batch)),
            tensors=measured,
            channel_tensors=measured,
            threads=cfg.threads,
        )
        amax = {t: first.stats[t].channel_amax for t in measured if first.stats[t].channel_amax is not None}
        scales = smoothing_scales(model, amax, cfg.smoothquant_alpha, pairs)
        by_output = {p.output: p for p in pairs}
        transforms["smoothquant"] = {
            "alpha": cfg.smoothquant_alpha,
            "scales": {k: [float(v) for v in s] for k, s in scales.items()},
            # ranges of the *unsmoothed* tensors, for the TensorRT cache of the FP32 model:
            # every tensor the scale divides (the LayerNorm output and what is gathered from it)
            "original_amax": {
                t: float(np.max(amax[t])) for k in scales for t in dict.fromkeys([k, *by_output[k].inputs]) if t in amax
            },
        }
        prepare_model(model, transforms)
    linear_inputs = [n.input[0] for n in model.graph.node if linear_weight(model, n) is not None]
    result = collect_stats(
        model,
        progress_bar(progress, "calibrate", steps)(iter_batches(images, info.preprocess, batch)),
        channel_tensors=linear_inputs if cfg.bias_correction else (),
        bins=cfg.bins,
        threads=cfg.threads,
    )
    if cfg.bias_correction:
        means = {t: result.get(t).channel_mean for t in linear_inputs if t in result.stats}
        transforms["bias_correction"] = {
            "input_means": {t: [float(v) for v in m] for t, m in means.items() if m is not None}
        }
    settings = cfg.settings()
    consumers_of = _activation_consumers(model, cfg.op_types, float_nodes(model, settings))
    names = list(result.stats) + list(result.aliases)
    candidates = {n: result.get(n).candidates(cfg.percentile) for n in names}
    chosen_method = {n: ("entropy" if cfg.method == "auto" else cfg.method) for n in names}
    amax = {n: candidates[n][chosen_method[n]] for n in names}
    fixed = input_range(model, info.preprocess, result)
    for n, bound in fixed.items():
        candidates[n] = dict.fromkeys(candidates[n], bound)
        amax[n] = bound
    settings["calibration_batch"] = batch
    if cfg.method == "auto":
        from edgevit.quant.layer_error import choose, layer_errors

        # every tensor starts at percentile (the default's bound); a MatMul/Gemm input moves to
        # the candidate that least changes its reader's output (see edgevit.quant.layer_error)
        for n in names:
            chosen_method[n] = "percentile"
            amax[n] = candidates[n]["percentile"]
        search = {t: c for t, c in candidates.items() if t in consumers_of and t not in fixed}
        sub = images[: cfg.auto_images]
        errors = layer_errors(
            model,
            progress_bar(progress, "auto ranges", -(-len(sub) // batch))(iter_batches(sub, info.preprocess, batch)),
            search,
            cfg.op_types,
            threads=cfg.threads,
        )
        for t, method in choose(errors, prefer="percentile").items():
            chosen_method[t], amax[t] = method, candidates[t][method]
        settings["auto"] = "per tensor, the bound that least changes its reader's output (layer output error)"
        settings["auto_images_used"] = len(sub)
    chosen_method.update(dict.fromkeys(fixed, "input"))
    for n, floor in softmax_floors(model, result).items():
        if amax[n] < floor:
            amax[n], chosen_method[n] = floor, "softmax-floor"
    tensors: dict[str, TensorRange] = {}
    for name in names:
        st = result.get(name)
        if not np.isfinite(amax[name]):
            raise QuantizationError(
                f"tensor {name!r} has a non-finite range; the model produces Inf/NaN on calibration images"
            )
        tensors[name] = TensorRange(
            min=st.min,
            max=st.max,
            amax=float(amax[name]),
            method=chosen_method[name],
            quantized=name in consumers_of,
            candidates={k: float(v) for k, v in candidates[name].items()},
        )
    return CalibrationTable(
        model_sha256=sha256_file(model_path),
        method=cfg.method,
        num_images=len(images),
        image_source=image_source,
        tensors=dict(sorted(tensors.items())),
        settings=settings,
        model_name=model_path.name,
        transforms=transforms,
    )


def calibration_indices(n: int, num_images: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration indices (a reproducible draw without replacement) and a disjoint
    held-out slice of the remaining training images for the sensitivity scan (it reuses
    calibration images only when no image is left over)."""
    if n < 2:
        raise DataError(f"the calibration set has {n} image(s); it needs at least 2 (512 recommended)")
    if num_images >= n:
        calib = np.arange(n)
    else:
        calib = np.sort(np.random.default_rng(seed).choice(n, size=num_images, replace=False))
    rest = np.setdiff1d(np.arange(n), calib)
    if len(rest) == 0:
        rest = calib
    pick = np.random.default_rng(seed + 1).permutation(len(rest))[:holdout]
    return calib, np.sort(rest[pick])
