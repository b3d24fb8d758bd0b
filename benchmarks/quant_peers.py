"""Peer INT8 quantizers for the quantization-accuracy benchmark (bench_quant_accuracy.py).

Each ``quantize_<peer>(fp32_path, out_path, calib, **options)`` reads an FP32 ONNX (edgevit's
export: input ``images`` float32 NCHW, dynamic batch), calibrates on ``calib`` (float32
NCHW, already preprocessed exactly as the model expects) and writes a Q/DQ ONNX to
``out_path``, with the public API of that tool only. None of them imports edgevit or torch
(ModelOpt imports torch itself): run them in the benchmark venv, or in a subprocess per peer
(``python quant_peers.py PEER FP32 OUT CALIB.npy [key=value ...]``).

When the FP32 model carries edgevit metadata (``edgevit.*`` metadata_props), it is copied to
the output with ``edgevit.precision`` set to ``"int8"`` and the peer named under
``edgevit.extra["quantization"]`` so that ``edgevit build --check`` / ``runtime.load`` read it.

Peers:
  ort_default  onnxruntime.quantization.quantize_static with every default.
  ort_trt      quantize_static with ONNX Runtime's TensorRT recipe (QDQ, QInt8/QInt8, per channel,
               symmetric, no bias quantization, Q/DQ only on the inputs of MatMul/Gemm/Conv,
               dedicated Q/DQ pairs, Q/DQ pairs on weights, MatMul weight axis 1).
  nncf         nncf.quantize(ModelProto, nncf.Dataset, model_type=TRANSFORMER), default preset
               (MIXED for transformers: asymmetric activations), or preset=... via options.
  modelopt     modelopt.onnx.quantization.quantize(quantize_mode="int8", ...) (NVIDIA ModelOpt).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTED_OPS = ["MatMul", "Gemm", "Conv"]

# ONNX Runtime's recipe for TensorRT's explicit-quantization (Q/DQ) path. Sources: the
# ``quantize_static`` docstring (1.32: "use symmetric QuantType.QInt8 for both activations and
# weights when targeting GPU/TRT"; the comments on OpTypesToExcludeOutputQuantization,
# AddQDQPairToWeight, DedicatedQDQPair in qdq_quantizer.py name TensorRT) and Microsoft's
# onnxruntime-inference-examples quantization/nlp/bert/trt/e2e_tensorrt_bert_example.py
# (per_channel=True, QInt8/QInt8, ActivationSymmetric, AddQDQPairToWeight,
# OpTypesToExcludeOutputQuantization = op_types_to_quantize, DedicatedQDQPair,
# QDQOpTypePerChannelSupportToAxis {"MatMul": 1}, Percentile calibration).
ORT_TRT_EXTRA: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,  # TensorRT's parser rejects an INT32 bias DequantizeLinear
    "OpTypesToExcludeOutputQuantization": WEIGHTED_OPS,
    "AddQDQPairToWeight": True,
    "DedicatedQDQPair": True,
    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
}


# ---------------------------------------------------------------------------------------------
# shared helpers


def input_name(fp32_path: str) -> str:
    import onnx

    m = onnx.load(str(fp32_path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ValueError(f"{fp32_path}: expected one graph input, got {names}")
    return names[0]


def _check_calib(calib: np.ndarray) -> np.ndarray:
    calib = np.ascontiguousarray(calib, dtype=np.float32)
    if calib.ndim != 4 or len(calib) < 1:
        raise ValueError(f"calib must be float32 N x C x H x W, got shape {calib.shape}")
    if not np.isfinite(calib).all():
        raise ValueError("calib contains NaN or Inf")
    return calib


class ArrayReader:
    """onnxruntime CalibrationDataReader over an NCHW array: one batch dict per get_next()."""

    def __init__(self, calib: np.ndarray, name: str, batch_size: int = 16):
        self.calib, self.name, self.batch_size, self.pos = calib, name, batch_size, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.calib):
            return None
        x = self.calib[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return {self.name: x}

    def rewind(self) -> None:
        self.pos = 0

    def __len__(self) -> int:
        return (len(self.calib) + self.batch_size - 1) // self.batch_size


def copy_edgevit_metadata(fp32_path: str, out_path: str, peer: str, settings: dict[str, Any]) -> None:
    """Copy the FP32 model's ``edgevit.*`` metadata to ``out_path`` (precision int8, peer named),
    like edgevit's bench/variants.py ``_write_with_metadata``. No-op without edgevit metadata."""
    import onnx

    src = onnx.load(str(fp32_path), load_external_data=False)
    meta = {p.key: p.value for p in src.metadata_props}
    if "edgevit.model_config" not in meta:
        return
    out = onnx.load(str(out_path))
    meta["edgevit.precision"] = json.dumps("int8")
    extra = json.loads(meta.get("edgevit.extra", "{}") or "{}")
    extra["quantization"] = {"by": peer, "settings": _jsonable(settings)}
    meta["edgevit.extra"] = json.dumps(extra, sort_keys=True)
    kept = [p for p in out.metadata_props if not p.key.startswith("edgevit.")]
    del out.metadata_props[:]
    for p in kept:
        out.metadata_props.add(key=p.key, value=p.value)
    for k, v in meta.items():
        if k.startswith("edgevit."):
            out.metadata_props.add(key=k, value=v)
    tmp = str(out_path) + ".tmp"
    onnx.save(out, tmp)
    os.replace(tmp, out_path)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


@contextlib.contextmanager
def _quiet_root_logger(level: int = logging.ERROR):
    lg = logging.getLogger()
    prev = lg.level
    lg.setLevel(level)
    try:
        yield
    finally:
        lg.setLevel(prev)


# ---------------------------------------------------------------------------------------------
# (a) ONNX Runtime quantize_static, all defaults


def quantize_ort_default(fp32_path: str, out_path: str, calib: np.ndarray, **options: Any) -> None:
    """``quantize_static(fp32, out, reader)`` and nothing else. ORT 1.32 defaults: QDQ format,
    QInt8 activations *asymmetric* (nonzero zero points), QInt8 weights symmetric per tensor,
    MinMax calibration, every op type ORT can quantize (Add, Mul, Softmax, Transpose, ...),
    INT32 biases. ``options`` go to quantize_static unchanged (e.g. calibrate_method)."""
    from onnxruntime.quantization import quantize_static

    calib = _check_calib(calib)
    batch = int(options.pop("batch_size", 16))
    reader = ArrayReader(calib, input_name(fp32_path), batch)
    with _quiet_root_logger():
        quantize_static(str(fp32_path), str(out_path), reader, **options)
    copy_edgevit_metadata(fp32_path, out_path, "onnxruntime.quantize_static (defaults)", options)


# ---------------------------------------------------------------------------------------------
# (b) ONNX Runtime quantize_static, TensorRT recipe


def quantize_ort_trt(
    fp32_path: str,
    out_path: str,
    calib: np.ndarray,
    calibrate_method: str = "Percentile",
    percentile: float = 99.999,
    **options: Any,
) -> None:
    """``quantize_static`` configured for TensorRT (see ORT_TRT_EXTRA).

    Args:
        calibrate_method: "MinMax", "Entropy", "Percentile" (ORT's TRT BERT example) or "Distribution".
        percentile: CalibPercentile for Percentile (ORT's default 99.999).
        options: batch_size; extra_options entries to override (e.g. AddQDQPairToWeight=False);
            any other quantize_static keyword (nodes_to_exclude, ...).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib = _check_calib(calib)
    batch = int(options.pop("batch_size", 16))
    extra = dict(ORT_TRT_EXTRA)
    for key in list(options):
        if key[:1].isupper():  # extra_options keys are CamelCase
            extra[key] = options.pop(key)
    if calibrate_method == "Percentile":
        extra.setdefault("CalibPercentile", percentile)
    if calibrate_method in ("Percentile", "Entropy", "Distribution"):
        # histograms of every tensor for every batch: bound the memory
        extra.setdefault("CalibMaxIntermediateOutputs", max(1, len(calib) // batch))
    reader = ArrayReader(calib, input_name(fp32_path), batch)
    kwargs: dict[str, Any] = {
        "quant_format": QuantFormat.QDQ,
        "op_types_to_quantize": list(WEIGHTED_OPS),
        "per_channel": True,
        "reduce_range": False,
        "activation_type": QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "calibrate_method": getattr(CalibrationMethod, calibrate_method),
        "extra_options": extra,
    }
    kwargs.update(options)
    with _quiet_root_logger():
        quantize_static(str(fp32_path), str(out_path), reader, **kwargs)
    copy_edgevit_metadata(
        fp32_path,
        out_path,
        "onnxruntime.quantize_static (TensorRT recipe)",
        {"calibrate_method": calibrate_method, **extra},
    )


# ---------------------------------------------------------------------------------------------
# (c) NNCF


def quantize_nncf(
    fp32_path: str,
    out_path: str,
    calib: np.ndarray,
    preset: str | None = None,
    model_type: str | None = "TRANSFORMER",
    subset_size: int | None = None,
    fast_bias_correction: bool = True,
    target_device: str = "ANY",
    **options: Any,
) -> None:
    """``nncf.quantize`` on the ONNX ModelProto (NNCF's ONNX backend, onnxruntime for statistics).

    Args:
        preset: None (NNCF's default: MIXED for TRANSFORMER, i.e. asymmetric activations),
            "PERFORMANCE" (symmetric weights and activations) or "MIXED".
        model_type: "TRANSFORMER" (default here) or None.
        subset_size: calibration samples; default all of ``calib`` (NNCF's own default is 300).
        target_device: nncf.TargetDevice name (ANY, CPU, GPU (Intel), NPU, CPU_SPR); none is TensorRT.
        options: passed to nncf.quantize (ignored_scope=nncf.IgnoredScope(...), advanced_parameters=...).
    """
    import nncf
    import onnx

    calib = _check_calib(calib)
    name = input_name(fp32_path)
    model = onnx.load(str(fp32_path))
    # one image per item: NNCF counts subset_size in dataset items
    dataset = nncf.Dataset(list(calib), lambda x: {name: x[None]})
    kwargs: dict[str, Any] = {
        "subset_size": int(subset_size or len(calib)),
        "fast_bias_correction": fast_bias_correction,
        "target_device": getattr(nncf.TargetDevice, target_device),
    }
    if preset is not None:
        kwargs["preset"] = getattr(nncf.QuantizationPreset, preset)
    if model_type is not None:
        kwargs["model_type"] = getattr(nncf.ModelType, model_type)
    kwargs.update(options)
    qmodel = nncf.quantize(model, dataset, **kwargs)
    onnx.save(qmodel, str(out_path))
    copy_edgevit_metadata(
        fp32_path,
        out_path,
        f"nncf {nncf.__version__} quantize",
        {
            "preset": preset,
            "model_type": model_type,
            "subset_size": kwargs["subset_size"],
            "target_device": target_device,
        },
    )


# ---------------------------------------------------------------------------------------------
# (d) NVIDIA ModelOpt ONNX PTQ


def quantize_modelopt(
    fp32_path: str,
    out_path: str,
    calib: np.ndarray,
    calibration_method: str = "entropy",
    calibration_eps: list[str] | None = None,
    **options: Any,
) -> None:
    """``modelopt.onnx.quantization.quantize(..., quantize_mode="int8")``.

    Args:
        calibration_method: "entropy" (ModelOpt's INT8 default) or "max".
        calibration_eps: execution providers for calibration; default ["cpu"] (ModelOpt's own
            default is ["cpu", "cuda:0", "trt"], which needs onnxruntime-gpu and a GPU).
        options: any other keyword of modelopt.onnx.quantization.quantize (op_types_to_quantize,
            nodes_to_exclude, high_precision_dtype, use_external_data_format, ...).
    """
    from modelopt.onnx.quantization import quantize

    calib = _check_calib(calib)
    name = input_name(fp32_path)
    options.setdefault("high_precision_dtype", "fp32")  # edgevit compares INT8+FP32 graphs; ModelOpt's default is fp16
    # ModelOpt writes intermediate models (<name>_opset19.onnx, <name>_named.onnx) next to its
    # input: give it a private copy so the FP32 folder stays untouched and peers can run in parallel.
    with tempfile.TemporaryDirectory(prefix="modelopt-") as tmp:
        src = Path(tmp) / Path(fp32_path).name
        shutil.copyfile(fp32_path, src)
        quantize(
            onnx_path=str(src),
            quantize_mode="int8",
            calibration_data={name: calib},
            calibration_method=calibration_method,
            calibration_eps=list(calibration_eps or ["cpu"]),
            output_path=str(Path(out_path).resolve()),
            **options,
        )
    copy_edgevit_metadata(
        fp32_path,
        out_path,
        "modelopt.onnx.quantization.quantize int8",
        {"calibration_method": calibration_method, "calibration_eps": calibration_eps or ["cpu"], **options},
    )


PEERS = {
    "ort_default": quantize_ort_default,
    "ort_trt": quantize_ort_trt,
    "nncf": quantize_nncf,
    "modelopt": quantize_modelopt,
}


# ---------------------------------------------------------------------------------------------
# graph facts (no edgevit needed)


def describe_qdq(path: str) -> dict[str, Any]:
    """Counts of Q/DQ nodes, what DQ outputs feed, zero-point facts, INT32 DQ inputs, domains."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant"}

    def arr(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        n = const_nodes.get(name)
        if n is not None:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ops: dict[str, int] = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    feeds: dict[str, int] = {}
    zp_nonzero = 0
    zp_types: dict[str, int] = {}
    int32_dq = 0
    per_channel_q = 0
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) > 2 and n.input[2]:
            zp = arr(n.input[2])
            if zp is not None:
                zp_types[str(zp.dtype)] = zp_types.get(str(zp.dtype), 0) + 1
                zp_nonzero += int(np.any(zp != 0))
        else:
            zp_types["none"] = zp_types.get("none", 0) + 1
        if n.op_type == "QuantizeLinear":
            s = arr(n.input[1])
            if s is not None and s.size > 1:
                per_channel_q += 1
            continue
        x = arr(n.input[0])
        if x is not None and x.dtype == np.int32:
            int32_dq += 1
        for c in consumers.get(n.output[0], []):
            feeds[c.op_type] = feeds.get(c.op_type, 0) + 1
    return {
        "nodes": len(g.node),
        "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "QuantizeLinear": ops.get("QuantizeLinear", 0),
        "DequantizeLinear": ops.get("DequantizeLinear", 0),
        "dq_feeds": dict(sorted(feeds.items(), key=lambda kv: -kv[1])),
        "zero_point_dtypes": zp_types,
        "qdq_with_nonzero_zero_point": zp_nonzero,
        "int32_dq": int32_dq,
        "per_channel_quantizelinear": per_channel_q,
        "custom_domains": sorted({n.domain for n in g.node if n.domain not in ("", "ai.onnx")}),
        "size_bytes": os.path.getsize(path),
    }


def main(argv: list[str]) -> int:
    """python quant_peers.py PEER FP32 OUT CALIB.npy [key=value ...]  (values parsed as JSON when they parse)."""
    if len(argv) < 4 or argv[0] not in PEERS:
        print(main.__doc__, "\npeers:", ", ".join(PEERS), file=sys.stderr)
        return 2
    peer, fp32, out, calib_path = argv[:4]
    opts: dict[str, Any] = {}
    for kv in argv[4:]:
        k, _, v = kv.partition("=")
        try:
            opts[k] = json.loads(v)
        except json.JSONDecodeError:
            opts[k] = v
    calib = np.load(calib_path)
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # ORT's calibrators print progress to stdout
        PEERS[peer](fp32, out, calib, **opts)
    seconds = time.perf_counter() - t
    print(json.dumps({"peer": peer, "seconds": round(seconds, 2), **describe_qdq(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
