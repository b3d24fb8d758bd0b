"""Batched inference on any artifact edgevit makes, without torch.

>>> from edgevit import runtime
>>> with runtime.load("runs/digits-nano/model.int8.onnx") as model:
...     pred = model.predict(images, top_k=3)   # uint8 HxWxC images, any size
...     print(pred.labels[0], pred.probs[0])
"""

from __future__ import annotations

from pathlib import Path

from edgevit.artifacts import read_onnx_info
from edgevit.errors import ArtifactError, BackendError
from edgevit.runtime.base import Model, Prediction, Runner, softmax

__all__ = ["Model", "Prediction", "Runner", "load", "softmax"]

ONNX_SUFFIXES = {".onnx"}
ENGINE_SUFFIXES = {".engine", ".plan"}


def load(
    path: str | Path,
    backend: str = "auto",
    *,
    provider: str = "cpu",
    batch_size: int = 32,
    threads: int | None = None,
) -> Model:
    """Load an artifact and return a :class:`Model` with ``predict``.

    Args:
        path: an ``.onnx`` model (FP32 or INT8 Q/DQ) or a TensorRT ``.engine``/``.plan``
            with its manifest beside it.
        backend: ``auto`` (by file type), ``onnxruntime`` or ``tensorrt``.
        provider: ONNX Runtime execution provider: ``cpu``, ``cuda`` or ``tensorrt``.
        batch_size: largest batch sent to the backend at once.
        threads: CPU threads for ONNX Runtime (``None``: all cores).
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if backend == "auto":
        if suffix in ONNX_SUFFIXES:
            backend = "onnxruntime"
        elif suffix in ENGINE_SUFFIXES:
            backend = "tensorrt"
        else:
            raise ArtifactError(f"{path}: unknown artifact type {suffix!r}; expected .onnx, .engine or .plan")
    if backend == "onnxruntime":
        from edgevit.runtime.ort_backend import OnnxRuntimeRunner

        info = read_onnx_info(path)
        runner = OnnxRuntimeRunner(path, provider=provider, threads=threads)
        return Model(runner, info, path=path, batch_size=batch_size)
    if backend == "tensorrt":
        try:
            from edgevit.runtime.trt_backend import load_engine
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(f"the TensorRT backend is not available in this edgevit install ({exc})") from exc
        return load_engine(path, batch_size=batch_size)
    raise BackendError(f"unknown backend {backend!r}; choose auto, onnxruntime or tensorrt")
