"""Post-training static INT8 quantization of an exported FP32 ONNX model.

Calibration is one pass over training images only (:mod:`edgevit.calib_stats`): per float
tensor (the TensorRT cache of the implicit-INT8 path wants them all) a bounded histogram
and the observed range, from which ``max``, ``percentile``, ``entropy`` and ``mse`` bounds
are all derived and recorded; ``auto`` picks one per tensor by the error it causes at the
model output (:mod:`edgevit.sensitivity`). Optional offline edits (:mod:`edgevit.smoothquant`):
SmoothQuant scale migration into LayerNorm -> Linear pairs, and bias correction. With an
accuracy ``budget``, a per-layer sensitivity scan leaves the fewest layers in floating
point that meet it. The ranges become a :class:`~edgevit.calib_table.CalibrationTable`
under ``calib/`` plus a TensorRT calibration cache. ONNX Runtime's QDQ quantizer then
writes the INT8 model with edgevit's ViT policy, the one TensorRT's explicit-quantization
path wants:

* signed INT8, symmetric (zero point 0), weights per output channel, activations per tensor;
* Q/DQ only on the inputs of MatMul/Gemm/Conv (the two attention batch matmuls
  included); LayerNorm, Softmax, GELU and the residual Adds stay in floating point, and so
  do biases and the outputs of the weighted ops.

The result is checked node by node against those rules (:mod:`edgevit.qdq_rules`)
before it is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import ArtifactInfo, atomic_output, read_onnx_info, sha256_file
from edgevit.calib_table import CalibrationTable, TensorRange, table_paths
from edgevit.data import load_dataset
from edgevit.errors import DataError, EdgeVitError, QuantizationError
from edgevit.preprocess import Preprocess
from edgevit.qdq_rules import WEIGHTED_OPS, check_qdq_graph, summarize_qdq

METHODS = ("max", "percentile", "entropy", "mse", "auto")
DEFAULT_NUM_IMAGES = 512  # NVIDIA recommends >= 500 for ViTs


@dataclass
class QuantizeConfig:
    """How to calibrate and quantize.

    Args:
        method: ``max`` (observed absolute maximum), ``percentile`` (clip the tail of
            the absolute-value histogram), ``entropy`` (KL-divergence threshold), ``mse``
            (minimum expected squared error) or ``auto`` (per tensor, the one of these
            bounds that least disturbs the model output). All come from one pass.
        percentile: for ``percentile``: the share of |values| kept unclipped.
        num_bins: histogram bins per tensor (default 2048, for every method).
        num_images: calibration images, drawn from the training split (never val/test);
            the whole split when it is smaller.
        batch_size: images per calibration batch (capped so one batch of intermediate
            tensors stays under ``batch_bytes``).
        seed: which training images are drawn (calibration, auto and held-out slices).
        op_types: weighted ops that get Q/DQ on their inputs.
        smoothquant: fold SmoothQuant scales into the LayerNorm -> Linear pairs.
        smoothquant_alpha: migration strength (0: none, 1: all range into the weights).
        bias_correction: subtract the expected output shift of INT8 weights from biases.
        budget: largest top-1 drop (points, on held-out training images) before layers
            fall back to floating point; None: everything INT8.
        min_agreement: smallest top-1 agreement (percent) the fallback must keep; None: no gate.
        holdout_images: held-out training images for the sensitivity scan.
        auto_images: calibration images on which ``auto`` compares bounds.
        batch_bytes: byte budget of one calibration batch's intermediate tensors.
        threads: ONNX Runtime threads for calibration (None: all cores).
    """

    method: str = "percentile"  # with SmoothQuant on, as good as auto on the nano models (benchmarks), and one pass
    percentile: float = 99.99
    num_bins: int | None = None
    num_images: int = DEFAULT_NUM_IMAGES
    batch_size: int = 32
    seed: int = 0
    op_types: tuple[str, ...] = WEIGHTED_OPS
    smoothquant: bool = True  # outlier nano model: 95.6% -> 100% top-1 agreement (benchmarks/quant_accuracy.md)
    smoothquant_alpha: float = 0.5  # SmoothQuant's default
    bias_correction: bool = False
    budget: float | None = None
    min_agreement: float | None = None
    holdout_images: int = 256
    auto_images: int = 128  # enough to rank bounds; each candidate costs one pass over them
    batch_bytes: int = 512 << 20  # keeps the tiny preset's calibration well under 3 GB
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EdgeVitError(f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 0.0 < self.percentile <= 100.0:
            raise EdgeVitError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.num_images < 2:
            raise DataError(f"calibration needs at least 2 images, got num_images={self.num_images}")
        bad = set(self.op_types) - set(WEIGHTED_OPS)
        if bad:
            raise EdgeVitError(f"only {WEIGHTED_OPS} may be quantized (TensorRT policy), not {sorted(bad)}")
        if not 0.0 <= self.smoothquant_alpha <= 1.0:
            raise EdgeVitError(f"smoothquant alpha must be in [0, 1], got {self.smoothquant_alpha}")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 100.0:
            raise EdgeVitError(f"min agreement is a percentage in [0, 100], got {self.min_agreement}")
        if self.bins < 256:
            raise EdgeVitError(f"num_bins must be at least 256, got {self.bins}")

    @property
    def bins(self) -> int:
        return self.num_bins if self.num_bins is not None else 2048

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "op_types": list(self.op_types),
            "percentile": self.percentile,
            "num_bins": self.bins,
        }
        if self.method == "auto":
            s["auto_images"] = self.auto_images
        return s


@dataclass
class QuantizeResult:
    path: Path
    table: CalibrationTable
    table_path: Path
    cache_path: Path
    summary: dict[str, int] = field(default_factory=dict)
    budget_met: bool = True
    message: str = ""  # why a budget was not met, when it was not


def _ort_quantization():
    from onnxruntime.quantization import calibrate, qdq_quantizer, quant_utils

    return calibrate, quant_utils, qdq_quantizer


class ImageCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over uint8 images: yields one preprocessed
    batch ``{input_name: float32 NCHW}`` per ``get_next()``, None at the end."""

    def __init__(self, images: np.ndarray, preprocess: Preprocess, input_name: str, batch_size: int = 32):
        self.images = images
        self.preprocess = preprocess
        self.input_name = input_name
        self.batch_size = batch_size
        self._pos = 0

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.images):
            return None
        chunk = self.images[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return {self.input_name: self.preprocess(chunk)}

    def rewind(self) -> None:
        self._pos = 0

    def __iter__(self):
        self.rewind()
        while (item := self.get_next()) is not None:
            yield item


def select_calibration_images(images: np.ndarray, num_images: int, seed: int) -> np.ndarray:
    """Draw ``num_images`` (or all) images without replacement, reproducibly."""
    if len(images) < 2:
        raise DataError(f"the calibration set has {len(images)} image(s); it needs at least 2 (512 recommended)")
    if num_images >= len(images):
        return images
    idx = np.sort(np.random.default_rng(seed).choice(len(images), size=num_images, replace=False))
    return images[idx]


def check_images(images: np.ndarray, source: str = "calibration set") -> None:
    """Refuse images with NaN/Inf, naming the first offending image."""
    if np.issubdtype(images.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1))
        if bad.size:
            raise DataError(
                f"image {int(bad[0])} of the {source} contains NaN or Inf ({bad.size} such images); fix or remove it"
            )


def _activation_consumers(model: Any, op_types: tuple[str, ...]) -> dict[str, set[str]]:
    consumers_of: dict[str, set[str]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if node.op_type in op_types and (i == 0 or (node.op_type == "MatMul" and i == 1)):
                consumers_of.setdefault(name, set()).add(node.op_type)
    return consumers_of


def prepare_model(model: Any, transforms: dict[str, Any]) -> list[str]:
    """Apply a table's recorded offline edits to ``model`` (in place); return what was done."""
    from edgevit.smoothquant import apply_channel_scales, bias_correct

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


def _tqdm(progress: bool, desc: str, total: int | None = None) -> Callable[[Any], Any]:
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

    from edgevit.calib_stats import capped_batch_size, collect_stats, iter_batches
    from edgevit.smoothquant import find_layernorm_pairs, linear_weight_axis, smoothing_scales

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
        outs = [p.output for p in pairs]
        first = collect_stats(
            model,
            _tqdm(progress, "smoothquant maxima", steps)(iter_batches(images, info.preprocess, batch)),
            tensors=outs,
            channel_tensors=outs,
            threads=cfg.threads,
        )
        amax = {t: first.stats[t].channel_amax for t in outs if first.stats[t].channel_amax is not None}
        scales = smoothing_scales(model, amax, cfg.smoothquant_alpha, pairs)
        transforms["smoothquant"] = {
            "alpha": cfg.smoothquant_alpha,
            "scales": {k: [float(v) for v in s] for k, s in scales.items()},
            # ranges of the *unsmoothed* tensors, for the TensorRT cache of the FP32 model
            "original_amax": {k: float(np.max(amax[k])) for k in scales},
        }
        prepare_model(model, transforms)
    linear_inputs = [n.input[0] for n in model.graph.node if linear_weight_axis(model, n) is not None]
    result = collect_stats(
        model,
        _tqdm(progress, "calibrate", steps)(iter_batches(images, info.preprocess, batch)),
        channel_tensors=linear_inputs if cfg.bias_correction else (),
        bins=cfg.bins,
        threads=cfg.threads,
    )
    if cfg.bias_correction:
        means = {t: result.get(t).channel_mean for t in linear_inputs if t in result.stats}
        transforms["bias_correction"] = {
            "input_means": {t: [float(v) for v in m] for t, m in means.items() if m is not None}
        }
    consumers_of = _activation_consumers(model, cfg.op_types)
    names = list(result.stats) + list(result.aliases)
    candidates = {n: result.get(n).candidates(cfg.percentile) for n in names}
    chosen_method = {n: ("entropy" if cfg.method == "auto" else cfg.method) for n in names}
    amax = {n: candidates[n][chosen_method[n]] for n in names}
    settings = cfg.settings()
    settings["calibration_batch"] = batch
    if cfg.method == "auto":
        from edgevit.sensitivity import FakeQuantProbe, auto_ranges

        probe_model = onnx.ModelProto()
        probe_model.CopyFrom(model)
        if "bias_correction" in transforms:
            prepare_model(probe_model, {"bias_correction": transforms["bias_correction"]})
        probe = FakeQuantProbe(probe_model, cfg.op_types, threads=cfg.threads)
        sub = images[: cfg.auto_images]
        x = info.preprocess(sub)
        auto_amax, auto_method = auto_ranges(
            probe, x, {t: candidates[t] for t in probe.activations}, progress=_tqdm(progress, "auto ranges")
        )
        amax.update(auto_amax)
        chosen_method.update(auto_method)
        settings["auto_evaluations"] = probe.evaluations
        settings["auto_images_used"] = len(sub)
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


def choose_fallback(
    model_path: str | Path,
    table: CalibrationTable,
    images: np.ndarray,
    labels: np.ndarray,
    info: ArtifactInfo,
    cfg: QuantizeConfig,
    progress: bool = True,
) -> Any:
    """Sensitivity scan on held-out images and the fewest floating-point layers meeting
    ``cfg.budget``/``cfg.min_agreement``; writes both into ``table`` and returns the report."""
    import onnx

    from edgevit.sensitivity import FakeQuantProbe, scan_and_fallback

    if len(images) < 2:
        raise DataError(f"the sensitivity scan needs at least 2 held-out images, got {len(images)}")
    check_images(images, "held-out slice")
    model = onnx.load(str(model_path))
    prepare_model(model, table.transforms)
    probe = FakeQuantProbe(model, cfg.op_types, threads=cfg.threads)
    amax = {t: table.tensors[t].amax for t in probe.activations if t in table.tensors}
    missing = [t for t in probe.activations if t not in amax]
    if missing:
        raise QuantizationError(f"the calibration table has no range for {missing[0]!r}; recalibrate")
    report = scan_and_fallback(
        probe,
        info.preprocess(images),
        labels,
        amax,
        cfg.budget,
        cfg.min_agreement,
        seed=cfg.seed,
        progress=_tqdm(progress, "sensitivity scan"),
    )
    table.float_layers = list(report.float_layers)
    table.sensitivity = report.to_dict()
    return report


def quantize_model(
    model_path: str | Path, table: CalibrationTable, out_path: str | Path, info: ArtifactInfo, cfg: QuantizeConfig
) -> dict[str, int]:
    """Write the INT8 Q/DQ model of ``model_path`` with the ranges of ``table``."""
    import onnx

    calibrate_mod, quant_utils, qdq_quantizer = _ort_quantization()
    model = quant_utils.load_model_with_shape_infer(Path(model_path))
    applied = prepare_model(model, table.transforms)
    node_names = {n.name for n in model.graph.node}
    unknown = [n for n in table.float_layers if n not in node_names]
    if unknown:
        raise QuantizationError(f"the calibration table keeps unknown layer {unknown[0]!r} in float; recalibrate")
    ranges = calibrate_mod.TensorsData(
        calibrate_mod.CalibrationMethod.MinMax,
        {name: (np.float32(-r.amax), np.float32(r.amax)) for name, r in table.tensors.items() if r.quantized},
    )
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT rejects INT32 bias DequantizeLinear
        "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),  # no Q/DQ on matmul outputs
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # [K, N] weights: output channel is axis 1
    }
    ort_logger = logging.getLogger("root")
    previous = ort_logger.level
    ort_logger.setLevel(logging.ERROR)
    try:
        quantizer = qdq_quantizer.QDQQuantizer(
            model,
            True,  # per_channel
            False,  # reduce_range
            quant_utils.QuantType.QInt8,
            quant_utils.QuantType.QInt8,
            ranges,
            [],  # nodes_to_quantize: all of op_types
            list(table.float_layers),  # nodes_to_exclude: the budget's floating-point fallback
            list(cfg.op_types),
            extra,
        )
        quantizer.quantize_model()
    finally:
        ort_logger.setLevel(previous)
    quantizer.model.topological_sort()
    qmodel = quantizer.model.model
    problems = check_qdq_graph(qmodel)
    if problems:
        raise QuantizationError(
            f"the quantized graph breaks TensorRT's Q/DQ rules: {problems[0]} (+{len(problems) - 1} more)"
        )
    info.precision = "int8"
    info.source_sha256 = table.model_sha256
    summary = summarize_qdq(qmodel)
    info.extra["quantization"] = {
        "format": "QDQ",
        "weights": "int8 symmetric per-channel",
        "activations": "int8 symmetric per-tensor",
        "method": table.method,
        "num_images": table.num_images,
        "image_source": table.image_source,
        "settings": table.settings,
        "transforms": applied,
        "float_layers": list(table.float_layers),
        "tensor_methods": _method_counts(table),
        **summary,
    }
    if "smoothquant" in table.transforms:
        # the tensors of the smoothed LayerNorm outputs are y / s: record s so tools comparing
        # with the FP32 model (edgevit inspect) can undo it
        info.extra["quantization"]["smoothquant"] = table.transforms["smoothquant"]
    del qmodel.metadata_props[:]
    for key, value in info.to_metadata().items():
        entry = qmodel.metadata_props.add()
        entry.key, entry.value = key, value
    qmodel.producer_name = "edgevit"
    onnx.checker.check_model(qmodel)
    with atomic_output(out_path) as tmp:
        onnx.save_model(qmodel, str(tmp))
    return summary


def _method_counts(table: CalibrationTable) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in table.tensors.values():
        if r.quantized:
            counts[r.method] = counts.get(r.method, 0) + 1
    return dict(sorted(counts.items()))


def calibration_indices(n: int, num_images: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration indices (as :func:`select_calibration_images` draws them) and a disjoint
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
    out_path = (
        Path(out_path) if out_path else model_path.with_name(model_path.name.removesuffix(".onnx") + ".int8.onnx")
    )
    if out_path.resolve() == model_path.resolve():
        raise EdgeVitError("the INT8 output would overwrite the FP32 model; choose another --output")
    model_sha = sha256_file(model_path)

    ds = None

    def dataset() -> Any:
        nonlocal ds
        if ds is None:
            source = data or info.data
            cfg_model = info.model_config
            try:
                ds = load_dataset(source, size=cfg_model.img_size, channels=cfg_model.in_chans)
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
