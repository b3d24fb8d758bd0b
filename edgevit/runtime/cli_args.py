"""The command-line options of every command that loads a model (``predict``,
``validate``, ``camera``, ``serve``): one definition of backend, provider, OpenVINO precision
and threads,
so each command spells them the same way and passes them to :func:`edgevit.runtime.load`."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgevit.runtime import BACKENDS, Model, load
from edgevit.runtime.openvino_backend import PRECISIONS
from edgevit.runtime.ort_backend import PROVIDERS


def add_runtime_args(p: argparse.ArgumentParser, what: str = "the model") -> None:
    """Add ``--backend``, ``--provider``, ``--openvino-precision`` and ``--threads`` to ``p``."""
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help=f"runtime for {what}: auto (ONNX Runtime for .onnx, TensorRT for .engine/.plan), "
        "onnxruntime, openvino (x86 CPUs, pip install 'edgevit[openvino]') or tensorrt",
    )
    p.add_argument(
        "--provider",
        default="cpu",
        choices=sorted(PROVIDERS),
        help="ONNX Runtime execution provider (default cpu)",
    )
    p.add_argument(
        "--openvino-precision",
        default="default",
        choices=PRECISIONS,
        help="OpenVINO's precision for the parts that are not INT8 (default: FP32 as in the file; "
        "auto: OpenVINO's choice, BF16 on CPUs with BF16 units)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime or OpenVINO (default: all)")


def load_from_args(path: str | Path, args: argparse.Namespace) -> Model:
    """:func:`edgevit.runtime.load` with the options :func:`add_runtime_args` added."""
    return load(
        path,
        backend=args.backend,
        provider=args.provider,
        precision=args.openvino_precision,
        threads=args.threads,
    )
