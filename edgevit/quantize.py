"""Post-training static INT8 quantization of an exported FP32 ONNX model.

Calibration runs ONNX Runtime's calibrators (max, percentile, entropy) over training
images only, one batch at a time so memory does not grow with the image count, and
measures every float tensor (the TensorRT cache of the implicit-INT8 path wants them
all). The ranges become a :class:`~edgevit.calib_table.CalibrationTable` under ``calib/``
plus a TensorRT calibration cache. ONNX Runtime's QDQ quantizer then writes the INT8
model with edgevit's ViT policy, the one TensorRT's explicit-quantization path wants:

* signed INT8, symmetric (zero point 0), weights per output channel, activations per tensor;
* Q/DQ only on the inputs of MatMul/Gemm/Conv (the two attention batch matmuls
  included); LayerNorm, Softmax, GELU and the residual Adds stay in floating point, and so
  do biases and the outputs of the weighted ops.

The result is checked node by node against those rules (:mod:`edgevit.qdq_rules`)
before it is written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
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

METHODS = ("max", "percentile", "entropy")
DEFAULT_NUM_IMAGES = 512  # NVIDIA recommends >= 500 for ViTs


@dataclass
class QuantizeConfig:
    """How to calibrate and quantize.

    Args:
        method: ``max`` (observed absolute maximum), ``percentile`` (clip the tail of
            the absolute-value histogram) or ``entropy`` (KL-divergence threshold).
        percentile: for ``percentile``: the share of |values| kept unclipped.
        num_bins: histogram bins for ``percentile`` (default 2048) and ``entropy``
            (default 512: ONNX Runtime's KL search is quadratic in the bins; 2048 bins
            took 63 s against 8.5 s for the nano model's 154 tensors on 2 cores).
        num_images: calibration images, drawn from the training split (never val/test);
            the whole split when it is smaller.
        batch_size: images per calibration batch.
        seed: which training images are drawn.
        op_types: weighted ops that get Q/DQ on their inputs.
    """

    method: str = "percentile"
    percentile: float = 99.99
    num_bins: int | None = None
    num_images: int = DEFAULT_NUM_IMAGES
    batch_size: int = 32
    seed: int = 0
    op_types: tuple[str, ...] = WEIGHTED_OPS

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

    @property
    def bins(self) -> int:
        if self.num_bins is not None:
            return self.num_bins
        return 512 if self.method == "entropy" else 2048

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"seed": self.seed, "batch_size": self.batch_size, "op_types": list(self.op_types)}
        if self.method == "percentile":
            s["percentile"] = self.percentile
        if self.method in ("percentile", "entropy"):
            s["num_bins"] = self.bins
        return s


@dataclass
class QuantizeResult:
    path: Path
    table: CalibrationTable
    table_path: Path
    cache_path: Path
    summary: dict[str, int] = field(default_factory=dict)


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


class _OneBatch:
    """Reader handing ONNX Runtime's calibrator a single batch, so the histograms are
    merged batch by batch and intermediate tensors never pile up."""

    def __init__(self, feed: dict[str, np.ndarray]):
        self.feed: dict[str, np.ndarray] | None = feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self.feed = self.feed, None
        return feed


def select_calibration_images(images: np.ndarray, num_images: int, seed: int) -> np.ndarray:
    """Draw ``num_images`` (or all) images without replacement, reproducibly."""
    if len(images) < 2:
        raise DataError(f"the calibration set has {len(images)} image(s); it needs at least 2 (512 recommended)")
    if num_images >= len(images):
        return images
    idx = np.sort(np.random.default_rng(seed).choice(len(images), size=num_images, replace=False))
    return images[idx]


def calibrate(
    model_path: str | Path,
    images: np.ndarray,
    info: ArtifactInfo,
    cfg: QuantizeConfig,
    image_source: str,
    progress: bool = True,
) -> CalibrationTable:
    """Measure the range of every float tensor of ``model_path`` on ``images``."""
    import onnx

    calibrate_mod, _, _ = _ort_quantization()
    model_path = Path(model_path)
    methods = {
        "max": calibrate_mod.CalibrationMethod.MinMax,
        "percentile": calibrate_mod.CalibrationMethod.Percentile,
        "entropy": calibrate_mod.CalibrationMethod.Entropy,
    }
    extra: dict[str, Any] = {"symmetric": True}
    if cfg.method == "percentile":
        extra.update(percentile=cfg.percentile, num_bins=cfg.bins)
    elif cfg.method == "entropy":
        extra.update(num_bins=cfg.bins, num_quantized_bins=128)
    model = onnx.load(str(model_path))
    input_name = model.graph.input[0].name
    consumers_of: dict[str, set[str]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if node.op_type in cfg.op_types and (i == 0 or (node.op_type == "MatMul" and i == 1)):
                consumers_of.setdefault(name, set()).add(node.op_type)

    reader = ImageCalibrationReader(images, info.preprocess, input_name, cfg.batch_size)
    from tqdm.auto import tqdm

    # ORT's calibrators print their progress to stdout; library code must not.
    with tempfile.TemporaryDirectory(prefix="edgevit-calib-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = calibrate_mod.create_calibrator(
            model_path,
            [],  # every float tensor: the TensorRT cache of the implicit path needs them all
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=methods[cfg.method],
            extra_options=extra,
        )
        for feed in tqdm(
            reader, total=len(reader), desc=f"calibrate ({cfg.method})", disable=not progress, leave=False
        ):
            if not all(np.isfinite(v).all() for v in feed.values()):
                raise DataError("a calibration batch contains NaN or Inf after preprocessing; check the images")
            calibrator.collect_data(_OneBatch(feed))
        ranges = calibrator.compute_data()
        observed = _observed_ranges(calibrator)
    tensors: dict[str, TensorRange] = {}
    for name, data in ranges.items():
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in data.range_value)
        obs_lo, obs_hi = observed.get(name, (lo, hi))
        amax = max(abs(lo), abs(hi))
        if not np.isfinite(amax):
            raise QuantizationError(
                f"tensor {name!r} has a non-finite range; the model produces Inf/NaN on calibration images"
            )
        tensors[name] = TensorRange(
            min=obs_lo, max=obs_hi, amax=amax, method=cfg.method, quantized=name in consumers_of
        )
    return CalibrationTable(
        model_sha256=sha256_file(model_path),
        method=cfg.method,
        num_images=len(images),
        image_source=image_source,
        tensors=dict(sorted(tensors.items())),
        settings=cfg.settings(),
        model_name=model_path.name,
    )


def _observed_ranges(calibrator: Any) -> dict[str, tuple[float, float]]:
    collector = getattr(calibrator, "collector", None)
    hist = getattr(collector, "histogram_dict", None) or {}
    out = {}
    for name, entry in hist.items():
        if len(entry) >= 4:
            out[name] = (float(np.min(entry[2])), float(np.max(entry[3])))
    return out


def quantize_model(
    model_path: str | Path, table: CalibrationTable, out_path: str | Path, info: ArtifactInfo, cfg: QuantizeConfig
) -> dict[str, int]:
    """Write the INT8 Q/DQ model of ``model_path`` with the ranges of ``table``."""
    import onnx

    calibrate_mod, quant_utils, qdq_quantizer = _ort_quantization()
    model = quant_utils.load_model_with_shape_infer(Path(model_path))
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
            [],
            [],
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
        **summary,
    }
    del qmodel.metadata_props[:]
    for key, value in info.to_metadata().items():
        entry = qmodel.metadata_props.add()
        entry.key, entry.value = key, value
    qmodel.producer_name = "edgevit"
    onnx.checker.check_model(qmodel)
    with atomic_output(out_path) as tmp:
        onnx.save_model(qmodel, str(tmp))
    return summary


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

    if calib_table is not None:
        table = CalibrationTable.load(calib_table)
        table.check_model(model_sha, model_path)
        table_path = Path(calib_table)
        cache_path = table_path.with_suffix(".cache")
        if not cache_path.exists():
            table.save_trt_cache(cache_path)
    else:
        source = data or info.data
        cfg_model = info.model_config
        try:
            ds = load_dataset(source, size=cfg_model.img_size, channels=cfg_model.in_chans)
        except DataError as exc:
            raise DataError(f"cannot load calibration images from {source!r} ({exc}); pass --data") from exc
        images = select_calibration_images(ds.train.images, cfg.num_images, cfg.seed)
        if log:
            log(f"calibrating on {len(images)} training images of {ds.source} ({cfg.method})")
        table = calibrate(model_path, images, info, cfg, image_source=f"{ds.source}:train", progress=progress)
        table_path, cache_path = table_paths(calib_dir, model_path, model_sha, cfg.method)
        table.save(table_path)
        table.save_trt_cache(cache_path)
    summary = quantize_model(model_path, table, out_path, info, cfg)
    return QuantizeResult(out_path, table, table_path, cache_path, summary)
