"""edgevit: a Vision Transformer from training to INT8 inference on edge devices.

Importing the package imports neither torch nor onnxruntime; the training side
(``edgevit.model``, ``edgevit.train``, ``edgevit.export``) needs torch, the inference
side (``edgevit.runtime``, ``edgevit.validate``) needs numpy and onnxruntime only.
"""

from __future__ import annotations

from edgevit.errors import (
    ArtifactError,
    BackendError,
    DataError,
    EdgeVitError,
    GateError,
    InputError,
    QuantizationError,
)

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BackendError",
    "DataError",
    "EdgeVitError",
    "GateError",
    "InputError",
    "QuantizationError",
    "__version__",
]
