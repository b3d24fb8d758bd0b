"""OpenVINO backend for x86 CPUs: loads the very same ``.onnx`` artifact (FP32 or INT8 Q/DQ)
that ONNX Runtime runs, no conversion step.

Precision is never lowered silently. An INT8 Q/DQ artifact says which tensors are INT8;
everything else (LayerNorm, Softmax, GELU, the residual adds) is FP32 in the file, and
that is what edgevit asks OpenVINO for by default (``precision="default"``, an FP32
inference precision hint). Left to itself, OpenVINO's CPU plugin runs those parts in BF16
on CPUs with BF16 units (AVX-512 BF16 / AMX): ``precision="auto"`` lets it, ``"bf16"`` or
``"f16"`` ask for a lower precision outright. Measured on the 2-core AMX Xeon of
benchmarks/README.md, DeiT-Tiny's INT8 file ran *faster* with the FP32 hint (~175 vs ~146
images/s at batch 8), so the exact default costs nothing there.

The runner asks the compiled model which precision it really uses and puts it in its name:
``openvino:CPU:f32(default)``, ``openvino:CPU:bf16(auto)`` (OpenVINO's choice) or
``openvino:CPU:bf16(hint)`` (asked for).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import ArtifactError, BackendError, first_line

INSTALL_HINT = "pip install 'edgevit[openvino]'"
PRECISIONS = ("default", "auto", "f32", "bf16", "f16")


def import_openvino() -> Any:
    """Return the ``openvino`` module, or raise :class:`BackendError` saying how to get it."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendError(f"the OpenVINO backend needs the openvino package ({exc}); {INSTALL_HINT}") from exc
    return openvino


class OpenVinoRunner:
    """Runs an ONNX model with OpenVINO.

    Args:
        path: the ``.onnx`` file.
        device: OpenVINO device; ``CPU`` is the one edgevit supports and tests.
        precision: ``default`` (the artifact's own: FP32 for everything not quantized),
            ``auto`` (OpenVINO picks: BF16 on CPUs with BF16 units, else FP32), or an
            explicit inference precision hint ``f32``, ``bf16`` or ``f16``.
        threads: inference threads; ``None`` lets OpenVINO use every core.

    Thread-safe: each calling thread gets its own infer request on the shared compiled model.
    """

    def __init__(self, path: str | Path, device: str = "CPU", precision: str = "default", threads: int | None = None):
        ov = import_openvino()
        if precision not in PRECISIONS:
            raise BackendError(f"unknown OpenVINO precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        core = ov.Core()
        if device not in core.available_devices:
            raise BackendError(f"OpenVINO device {device!r} is not available here (have {core.available_devices})")
        try:
            model = core.read_model(str(path))
        except Exception as exc:
            raise ArtifactError(f"{path} is not a model OpenVINO can read ({first_line(exc)}); re-export it") from exc
        if len(model.inputs) != 1:
            raise ArtifactError(f"{path} has {len(model.inputs)} inputs; an edgevit classifier has exactly one")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = "f32" if precision == "default" else precision
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise BackendError(f"OpenVINO could not compile {path} for {device} ({first_line(exc)})") from exc
        self.input_name = model.inputs[0].get_any_name()
        self.output_names = [o.get_any_name() for o in model.outputs]
        self.inference_precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision_hint = precision
        how = precision if precision in ("default", "auto") else "hint"
        self.name = f"openvino:{device}:{self.inference_precision}({how})"
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.max_batch: int | None = None
        self._local = threading.local()

    def _request(self) -> Any:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.compiled is None:
            raise BackendError("this OpenVINO runner is closed; load the model again")
        x = feed[self.input_name]
        result = self._request().infer({0: x}, share_inputs=True, share_outputs=False)
        return [np.asarray(result[i]) for i in range(len(self.output_names))]

    def close(self) -> None:
        self.compiled = None
        self._local = threading.local()

    def __enter__(self) -> OpenVinoRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def precision_name(value: Any) -> str:
    """``<Type: 'bfloat16'>`` -> ``bf16``; ``<Type: 'float32'>`` -> ``f32``."""
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    for long, short in (("bfloat16", "bf16"), ("bf16", "bf16"), ("float32", "f32"), ("f32", "f32")):
        if long in text:
            return short
    if "float16" in text or "f16" in text:
        return "f16"
    return text or "unknown"
