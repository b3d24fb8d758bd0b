"""cuda-python's runtime API (``cuda.bindings.runtime``, or ``cuda.cudart`` before
cuda-python 12.6), with every returned error code checked.

Which cuda-python a JetPack needs (PyPI, aarch64 wheels): the CUDA major version of the
device's driver, and for JetPack 6 the minor of its CUDA. cuda-python 13 on a CUDA 12 driver
fails at the first CUDA call (cudaErrorInsufficientDriver, error 35).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from edgevit.errors import BackendError

# JetPack -> the cuda-python pin pyproject's extras install (checked by .ci/check-jetpack-deps).
CUDA_PYTHON_PINS: dict[str, str] = {
    "5": "cuda-python==11.8.*",  # CUDA 11.4, Python 3.8: 11.8.2 is the newest cp38 aarch64 wheel of 11.x
    "6.0": "cuda-python>=12.2,<12.3",  # CUDA 12.2
    "6.1": "cuda-python>=12.6,<12.7",  # CUDA 12.6 (6.1 and 6.2)
    "7": "cuda-python>=13.0,<13.1",  # CUDA 13.0 (JetPack 7.2 has 13.2: an older minor runs on a newer driver)
}

CUDA_PYTHON_HINT = (
    "install the cuda-python of the device's CUDA: `pip install 'edgevit[jetpack5]'` (CUDA 11.4), "
    "`[jetpack60]` (CUDA 12.2), `[jetpack61]` (6.1/6.2, CUDA 12.6) or `[jetpack7]` (CUDA 13); "
    "cuda-python 13 on a CUDA 12 driver fails with error 35"
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
        hint = f"; {CUDA_PYTHON_HINT}" if code == 35 else ""  # cudaErrorInsufficientDriver
        raise BackendError(f"CUDA call {what} failed: {name} ({_error_string(err)}){hint}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def stream_handle(stream: Any) -> int:
    """The ``cudaStream_t`` value ``execute_async_v3`` wants, as an int.

    cuda-python's ``cudaStream_t`` converts with ``int()`` (``__int__`` returns the handle).
    Its ``getPtr()`` is *not* a fallback: it returns the address of the Python object's storage
    of the handle, and TensorRT would enqueue on a garbage stream.
    """
    try:
        return int(stream)
    except (TypeError, ValueError) as exc:
        raise BackendError(
            f"cannot read the CUDA stream handle from {type(stream).__name__} ({exc}); {CUDA_PYTHON_HINT}"
        ) from exc


def version_text(number: int) -> str:
    """CUDA's integer version (``12060``) as ``"12.6"``."""
    number = int(number)
    return f"{number // 1000}.{(number % 1000) // 10}" if number > 0 else ""


def cuda_python_version() -> str:
    """The installed cuda-python (or cuda-bindings) version, "" when unknown."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return ""
    for dist in ("cuda-python", "cuda-bindings"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return ""


def _error_string(err: Any) -> str:
    try:
        cudart = import_cudart()
        res = cudart.cudaGetErrorString(err)
        text = res[1] if isinstance(res, tuple) else res
        return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:  # pragma: no cover - best effort only
        return "no description"
