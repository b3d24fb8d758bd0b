"""Importing TensorRT and talking to it the same way across 8.5, 10.x and 11.x.

Nothing here imports TensorRT at module import time: ``import_tensorrt()`` does it on
demand, so ``edgevit`` works (and ``edgevit build --print-trtexec`` prints) on a machine
without TensorRT. ``tensorrt_rtx`` (TensorRT for RTX, on PyPI) can stand in for TensorRT
for parse/build checks on a CPU-only machine; it cannot run plans and targets no Jetson.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from edgevit.errors import BackendError

INSTALL_HINT = (
    "on a Jetson use JetPack's TensorRT Python bindings (`sudo apt install python3-libnvinfer`, "
    "or a venv created with --system-site-packages); on a PC `pip install tensorrt`"
)


@dataclass(frozen=True)
class TrtVersion:
    """A TensorRT version and what its Python API offers."""

    major: int
    minor: int
    patch: int = 0
    text: str = ""
    module: str = "tensorrt"  # "tensorrt" or "tensorrt_rtx"

    @classmethod
    def parse(cls, text: str, module: str = "tensorrt") -> TrtVersion:
        m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
        if not m:
            raise BackendError(f"cannot read the TensorRT version {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), text.strip(), module)

    @property
    def tuple(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def is_rtx(self) -> bool:
        return self.module == "tensorrt_rtx"

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 (and TensorRT-RTX) removed weak typing: no FP16/INT8 builder flags."""
        return self.is_rtx or self.major >= 11

    @property
    def prefers_strongly_typed(self) -> bool:
        """Weak typing is deprecated from 10.12: build strongly typed there and later."""
        return self.is_rtx or self.tuple >= (10, 12, 0)

    @property
    def has_strongly_typed(self) -> bool:
        # NetworkDefinitionCreationFlag.STRONGLY_TYPED appeared in TensorRT 9 / 10.0.
        return self.is_rtx or self.major >= 10

    @property
    def has_implicit_int8(self) -> bool:
        """Calibrators and BuilderFlag.INT8 exist before 11 (deprecated from 10.1)."""
        return not self.is_rtx and self.major < 11

    @property
    def has_dla(self) -> bool:
        """DLA builds: TensorRT 11 dropped DLA (its docs: 10.7 was the last DLA release)."""
        return not self.is_rtx and self.major < 11

    @property
    def calib_tag(self) -> str:
        """Header of an EntropyCalibration2 cache for this version (TensorRT's own numbering:
        MAJOR*1000 + MINOR*100 + PATCH, e.g. 8.6.1 -> ``TRT-8601-EntropyCalibration2``)."""
        return f"TRT-{self.major * 1000 + self.minor * 100 + self.patch}-EntropyCalibration2"

    def __str__(self) -> str:
        prefix = "TensorRT-RTX " if self.is_rtx else "TensorRT "
        return prefix + (self.text or ".".join(map(str, self.tuple)))


def import_tensorrt(allow_rtx: bool = False, prefer_rtx: bool = False) -> tuple[ModuleType, TrtVersion]:
    """Import TensorRT (or, when allowed, TensorRT-RTX) and return it with its version.

    Raises:
        BackendError: neither is installed (with how to install it).
    """
    names = ["tensorrt"]
    if allow_rtx or prefer_rtx:
        names = ["tensorrt_rtx", "tensorrt"] if prefer_rtx else ["tensorrt", "tensorrt_rtx"]
    errors = []
    for name in names:
        try:
            module = __import__(name)
            version = TrtVersion.parse(str(module.__version__), module=name)
            return module, version
        except Exception as exc:  # ImportError, or the placeholder package's own errors
            errors.append(f"{name}: {exc}".splitlines()[0][:200])
    raise BackendError(f"TensorRT is not importable ({'; '.join(errors)}); {INSTALL_HINT}")


def make_logger(trt: ModuleType, min_severity: str = "WARNING") -> CollectingLogger:
    """A TensorRT logger that keeps messages instead of printing them (library code never prints)."""
    return CollectingLogger.create(trt, min_severity)


@dataclass
class LogRecord:
    severity: str
    message: str


@dataclass
class CollectingLogger:
    """Wraps a ``trt.ILogger`` subclass instance; ``records`` holds what TensorRT said."""

    trt_logger: Any
    records: list[LogRecord] = field(default_factory=list)

    @classmethod
    def create(cls, trt: ModuleType, min_severity: str = "WARNING") -> CollectingLogger:
        order = ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"]
        limit = order.index(min_severity)
        holder = cls(trt_logger=None)
        lock = threading.Lock()

        class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                name = getattr(severity, "name", str(severity)).split(".")[-1]
                rank = order.index(name) if name in order else 0
                if rank <= limit:
                    with lock:
                        holder.records.append(LogRecord(name, str(msg)))

        holder.trt_logger = _Logger()
        return holder

    def errors(self) -> list[str]:
        return [r.message for r in self.records if r.severity in ("ERROR", "INTERNAL_ERROR")]

    def warnings(self) -> list[str]:
        return [r.message for r in self.records if r.severity == "WARNING"]

    def last_error(self) -> str:
        errs = self.errors()
        return _one_line(errs[-1]) if errs else ""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class ParserError:
    """One ONNX parser error, node by node."""

    node_index: int
    node_name: str
    op_type: str
    code: str
    description: str

    def __str__(self) -> str:
        where = f"node {self.node_index}" if self.node_index >= 0 else "graph"
        if self.node_name:
            where += f" {self.node_name!r}"
        if self.op_type:
            where += f" ({self.op_type})"
        return f"{where}: {self.description} [{self.code}]"


def parser_errors(parser: Any, logger: CollectingLogger | None = None) -> list[ParserError]:
    """Read ``num_errors``/``get_error(i)`` from an ``OnnxParser`` (8.x has no node_name/node_operator)."""
    out = []
    for i in range(int(parser.num_errors)):
        e = parser.get_error(i)
        node = int(e.node()) if hasattr(e, "node") else -1
        name = str(e.node_name()) if hasattr(e, "node_name") else ""
        op = str(e.node_operator()) if hasattr(e, "node_operator") else ""
        code = str(e.code()).split(".")[-1]
        desc = _one_line(str(e.desc()))
        # Some errors ("Invalid Node - x") say more in the log than in desc(): add the log line.
        if logger is not None and name and desc.startswith("Invalid Node"):
            detail = [m for m in logger.errors() if name in m and "Invalid Node" not in m]
            if detail:
                desc = f"{desc}: {_one_line(detail[-1], 240)}"
        out.append(ParserError(node, name, op, code, desc))
    return out
