"""Models the benchmark builds for comparison, from the FP32 ONNX artifact it was given:

* ``ort_default_int8``: what ONNX Runtime's own ``quantize_static`` writes with every
  default (QDQ format, s8s8, per-tensor weights, Q/DQ on every op type it knows);
* ``nncf_int8``: what NNCF, OpenVINO's own quantizer, makes of the FP32 model with its
  transformer preset (``ModelType.TRANSFORMER``), saved as OpenVINO IR: the INT8 a user who
  picks OpenVINO runs (``pip install nncf``; asymmetric activations, so CPU only);
* ``policy_variant``: edgevit's INT8 policy (symmetric, per-channel weights, Q/DQ on
  MatMul/Gemm/Conv inputs only) changed in one respect, to measure whether another Q/DQ
  placement or type is faster on this CPU:

  - ``noattn``: the two attention batch matmuls stay in floating point;
  - ``u8act``: activations asymmetric uint8 (weights still symmetric int8 per channel),
    the u8s8 form x86 integer kernels take natively; TensorRT rejects it, so it could
    only ever be a CPU-only artifact.

  The benchmark only measures these; the default policy lives in :mod:`edgevit.quant`.

Calibration uses a few random uint8 images: these models exist to be timed, not to be
accurate, and the benchmark says so in its output.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import ArtifactInfo, atomic_output, read_onnx_info, set_onnx_metadata
from edgevit.preprocess import Preprocess
from edgevit.quant.graph import WEIGHTED_OPS, attention_matmuls
from edgevit.quant.writer import POLICY, quiet_ort_quantizer

VARIANTS = ("noattn", "u8act")  # policy variants the benchmark knows how to build


def random_images(preprocess: Preprocess, n: int, seed: int = 0) -> np.ndarray:
    """``n`` random uint8 images at the model's input size."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, preprocess.size, preprocess.size, preprocess.channels), dtype=np.uint8)


class _Reader:
    """ONNX Runtime calibration reader over preprocessed batches."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self._it: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer prints and logs warnings; library code stays silent."""
    with quiet_ort_quantizer(), contextlib.redirect_stdout(io.StringIO()):
        yield


def _write_with_metadata(proto: Any, info: ArtifactInfo, out_path: Path) -> None:
    import onnx

    set_onnx_metadata(proto, info)
    with atomic_output(out_path) as tmp:
        onnx.save_model(proto, str(tmp))


def _batches(fp32_path: Path, info: ArtifactInfo, images: np.ndarray, batch: int = 8) -> list[dict[str, np.ndarray]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [{name: info.preprocess(images[i : i + batch])} for i in range(0, len(images), batch)]


def ort_default_int8(fp32_path: str | Path, out_path: str | Path, images: np.ndarray) -> Path:
    """Quantize with ``onnxruntime.quantization.quantize_static`` and all its defaults."""
    import onnx
    from onnxruntime.quantization import quantize_static

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    info = read_onnx_info(fp32_path)
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-") as tmp, _quiet():
        raw = Path(tmp) / "ort_default.onnx"
        quantize_static(str(fp32_path), str(raw), _Reader(_batches(fp32_path, info, images)))
        proto = onnx.load(str(raw))
    info.precision = "int8"
    info.extra["quantization"] = {
        "by": "onnxruntime.quantization.quantize_static, all defaults",
        "calibration": "random",
    }
    _write_with_metadata(proto, info, out_path)
    return out_path


def nncf_available() -> bool:
    """Whether NNCF (and the OpenVINO it quantizes for) can be imported here."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def nncf_int8(fp32_path: str | Path, out_path: str | Path, images: np.ndarray) -> Path:
    """Quantize with NNCF's OpenVINO path, transformer preset (``out_path``: an IR ``.xml``;
    its ``.bin`` is written beside it)."""
    # NNCF's telemetry forks a process per event that tries the internet for up to 3 s (and the
    # fork inherits the CLI's signal handlers); it stays off in CI-marked environments
    os.environ.setdefault("NNCF_CI", "1")
    import nncf
    import openvino as ov

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    info = read_onnx_info(fp32_path)
    model = ov.Core().read_model(str(fp32_path))
    batches = [info.preprocess(images[i : i + 1]) for i in range(len(images))]
    with _quiet():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(batches),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(batches),
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-", dir=out_path.parent) as tmp:
        xml = Path(tmp) / out_path.name
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
        xml.with_suffix(".bin").replace(out_path.with_suffix(".bin"))
        xml.replace(out_path)
    return out_path


def policy_variant(fp32_path: str | Path, out_path: str | Path, images: np.ndarray, variant: str) -> Path:
    """edgevit's Q/DQ policy changed as ``variant`` says (one of :data:`VARIANTS`)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    info = read_onnx_info(fp32_path)
    nodes = attention_matmuls(onnx.load(str(fp32_path))) if variant == "noattn" else []
    u8 = variant == "u8act"
    extra = {**POLICY, "ActivationSymmetric": not u8}
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-") as tmp, _quiet():
        raw = Path(tmp) / "variant.onnx"
        quantize_static(
            str(fp32_path),
            str(raw),
            _Reader(_batches(fp32_path, info, images)),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(WEIGHTED_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8 if u8 else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=extra,
        )
        proto = onnx.load(str(raw))
    info.precision = "int8"
    info.extra["quantization"] = {"by": f"edgevit policy, variant {variant}", "nodes_left_fp32": len(nodes)}
    _write_with_metadata(proto, info, out_path)
    return out_path
