"""Lazy imports of the optional serving packages, with one actionable error when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgevit.errors import BackendError
from edgevit.serve import SERVE_EXTRA_HINT


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`BackendError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"{what} needs {module.split('.')[0]} ({exc.name or module} is not importable): {SERVE_EXTRA_HINT}"
        ) from exc


def model_config_pb2() -> ModuleType:
    """Triton's model configuration schema, as shipped in ``tritonclient``."""
    return require("tritonclient.grpc.model_config_pb2", "checking a Triton model configuration")
