"""One exception family for everything edgevit's library code raises on purpose.

Every message says what happened and what to do about it, in one line, because the
CLI prints ``str(error)`` as the only line on stderr and exits with code 2.
"""

from __future__ import annotations


class EdgeVitError(Exception):
    """Base class of every error edgevit raises for a problem the user can fix."""


class ArtifactError(EdgeVitError):
    """A checkpoint, ONNX model, calibration table, engine or manifest is missing,
    corrupt, or was made for something else."""


class DataError(EdgeVitError):
    """A data set or image folder cannot be used (no images, one class, bad files)."""


class InputError(EdgeVitError):
    """Images or tensors handed to a model have the wrong shape, dtype, channels or
    values (NaN / Inf)."""


class QuantizationError(EdgeVitError):
    """Calibration or quantization cannot produce a model that follows our rules."""


class BackendError(EdgeVitError):
    """A runtime backend (ONNX Runtime provider, TensorRT, CUDA) is missing or failed."""


class GateError(EdgeVitError):
    """A validation gate (accuracy drop, agreement) failed. The CLI exits with 1."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type name), at most ``limit``
    characters: what edgevit quotes from another library's error inside its own message."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text and text[0].strip() else type(exc).__name__
