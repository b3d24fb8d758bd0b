"""ONNX Runtime backend: the default that runs everywhere (CPU), plus ONNX Runtime's CUDA
and TensorRT execution providers when they are installed and asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevit.artifacts import _first_line
from edgevit.errors import ArtifactError, BackendError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntimeRunner:
    """Runs an ONNX model with ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        provider: ``cpu`` (default), ``cuda`` or ``tensorrt``. A provider that is not
            installed is an error, never a silent fall back to the CPU.
        threads: intra-op threads; ``None`` lets ONNX Runtime use every core.
    """

    def __init__(self, path: str | Path, provider: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        if provider not in PROVIDERS:
            raise BackendError(f"unknown ONNX Runtime provider {provider!r}; choose one of {sorted(PROVIDERS)}")
        ep = PROVIDERS[provider]
        available = ort.get_available_providers()
        if ep not in available:
            raise BackendError(
                f"ONNX Runtime provider {ep} is not available here (have {available}); "
                f"install onnxruntime-gpu for cuda/tensorrt, or use provider='cpu'"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        providers = [ep] if ep == "CPUExecutionProvider" else [ep, "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise ArtifactError(f"{path} is not a readable ONNX model ({_first_line(exc)}); re-export it") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(f"{path} has {len(inputs)} inputs; an edgevit classifier has exactly one")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name = f"onnxruntime:{self.session.get_providers()[0]}"
        self.max_batch: int | None = None

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feed)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def __enter__(self) -> OnnxRuntimeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
