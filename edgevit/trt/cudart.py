"""cuda-python's runtime API (``cuda.bindings.runtime``, or ``cuda.cudart`` before
cuda-python 12.6), with every returned error code checked."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from edgevit.errors import BackendError

CUDA_PYTHON_HINT = (
    "install cuda-python with the CUDA major version of the device "
    "(JetPack 5: `pip install 'cuda-python>=11.4,<12'`, JetPack 6: `'cuda-python>=12,<13'`, "
    "JetPack 7: `'cuda-python>=13'`)"
)


def import_cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[attr-defined,no-redef]  # cuda-python 11.x / 12.0-12.5

        return cudart
    except ImportError as exc:
        raise BackendError(f"cuda-python is not installed ({exc}); {CUDA_PYTHON_HINT}") from exc


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-python call's ``(err, *values)`` tuple; raise BackendError unless success.

    Returns None, the single value, or a tuple of values.
    """
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    code = int(getattr(err, "value", err))
    if code != 0:
        name = getattr(err, "name", str(err))
        raise BackendError(f"CUDA call {what} failed: {name} ({_error_string(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _error_string(err: Any) -> str:
    try:
        cudart = import_cudart()
        res = cudart.cudaGetErrorString(err)
        text = res[1] if isinstance(res, tuple) else res
        return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:  # pragma: no cover - best effort only
        return "no description"
