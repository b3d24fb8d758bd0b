"""Batched inference on any artifact edgevit makes, without torch.

>>> from edgevit import runtime
>>> with runtime.load("runs/digits-nano/model.int8.onnx") as model:
...     pred = model.predict(images, top_k=3)   # uint8 HxWxC images, any size
...     print(pred.labels[0], pred.probs[0])
"""

from __future__ import annotations

from pathlib import Path

from edgevit.artifacts import ArtifactInfo, read_onnx_info
from edgevit.errors import ArtifactError, BackendError
from edgevit.metrics import softmax
from edgevit.runtime.base import Model, Prediction, Runner, top_probs, topk

__all__ = ["Model", "Prediction", "Runner", "load", "softmax", "top_probs", "topk"]

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")
ONNX_SUFFIXES = {".onnx"}
ENGINE_SUFFIXES = {".engine", ".plan"}


def load(
    path: str | Path,
    backend: str = "auto",
    *,
    provider: str = "cpu",
    batch_size: int = 32,
    threads: int | None = None,
    precision: str = "default",
    parallel: str = "auto",
    int8: str = "auto",
) -> Model:
    """Load an artifact and return a :class:`Model` with ``predict``.

    Args:
        path: an ``.onnx`` model (FP32 or INT8 Q/DQ) or a TensorRT ``.engine``/``.plan``
            with its manifest beside it.
        backend: ``auto`` (by file type), ``onnxruntime``, ``openvino`` (x86 CPUs; the same
            ``.onnx`` file; needs ``pip install 'edgevit[openvino]'``) or ``tensorrt``.
        provider: ONNX Runtime execution provider: ``cpu``, ``cuda`` or ``tensorrt``.
        batch_size: largest batch sent to the backend at once.
        threads: CPU threads for ONNX Runtime or OpenVINO (``None``: all cores).
        precision: OpenVINO's precision for the parts of the model that are not INT8:
            ``default`` (FP32, what the artifact says), ``auto`` (OpenVINO's choice, BF16 on
            CPUs with BF16 units), ``f32``, ``bf16`` or ``f16``. The precision in use is in
            ``model.backend``. Other backends take only ``default``.
        parallel: how ONNX Runtime on the CPU uses the threads: ``auto`` (default),
            ``batch`` (one slice of the batch per thread, for throughput) or ``ops``
            (ONNX Runtime's intra-op threads, for the latency of one image); see
            :mod:`edgevit.runtime.ort_backend`.
        int8: how ONNX Runtime on the CPU computes an INT8 Q/DQ model: ``auto`` (its integer
            kernels, except on x86 CPUs without VNNI, where they saturate: there the Q/DQ graph
            in float, exactly what the artifact and TensorRT compute; ``model.backend`` then
            ends in ``:int8-exact``), ``integer`` or ``exact``.
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
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if provider != "cpu" and backend != "onnxruntime":
        raise BackendError(
            f"provider={provider!r} is an ONNX Runtime setting; use backend='onnxruntime' (or auto for .onnx)"
        )
    if precision != "default" and backend != "openvino":
        raise BackendError(f"precision={precision!r} is an OpenVINO setting; use backend='openvino' or leave it out")
    if int8 != "auto" and backend != "onnxruntime":
        raise BackendError(f"int8={int8!r} is an ONNX Runtime setting; use backend='onnxruntime' or leave it out")
    if parallel != "auto" and backend != "onnxruntime":
        raise BackendError(
            f"parallel={parallel!r} is an ONNX Runtime setting; use backend='onnxruntime' or leave it out"
        )
    if backend == "openvino":
        if suffix not in ONNX_SUFFIXES:
            raise ArtifactError(f"{path}: the OpenVINO backend loads .onnx models, not {suffix!r}")
        from edgevit.runtime.openvino_backend import OpenVinoRunner

        info = read_onnx_info(path)
        runner = OpenVinoRunner(path, precision=precision, threads=threads)
        return Model(runner, info, path=path, batch_size=batch_size)
    if backend == "onnxruntime":
        if suffix not in ONNX_SUFFIXES:
            raise ArtifactError(f"{path}: the ONNX Runtime backend loads .onnx models, not {suffix!r}")
        from edgevit.runtime.ort_backend import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(path, provider=provider, threads=threads, parallel=parallel, int8=int8)
        # the metadata comes from the session the runner already built: one session, not two
        meta = runner.session.get_modelmeta().custom_metadata_map
        return Model(runner, ArtifactInfo.from_metadata(meta, where=str(path)), path=path, batch_size=batch_size)
    # backend == "tensorrt"
    if suffix not in ENGINE_SUFFIXES:
        raise ArtifactError(
            f"{path}: the TensorRT backend loads built engines (.engine/.plan); build one on the device "
            f"with `edgevit build {path.name}`, or run the .onnx with backend='onnxruntime'"
        )
    try:
        from edgevit.runtime.trt_backend import load_engine
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendError(f"the TensorRT backend is not available in this edgevit install ({exc})") from exc
    return load_engine(path, batch_size=batch_size)
