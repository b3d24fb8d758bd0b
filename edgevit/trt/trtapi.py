"""Importing TensorRT and talking to it the same way across 8.5, 10.x and 11.x.

Nothing here imports TensorRT at module import time: ``import_tensorrt()`` does it on
demand, so ``edgevit`` works (and ``edgevit build --print-trtexec`` prints) on a machine
without TensorRT. ``tensorrt_rtx`` (TensorRT for RTX, on PyPI) can stand in for TensorRT
for parse/build checks on a CPU-only machine; it cannot run engines and targets no Jetson.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from edgevit.errors import BackendError

# Where TensorRT's Python bindings come from depends on the machine: say the truth for each.
DEVICE_HINT = (
    "on a Jetson use JetPack's TensorRT bindings (`sudo apt install python3-libnvinfer`, in a venv made with "
    "--system-site-packages); on a PC with an NVIDIA GPU `pip install tensorrt`"
)
CHECK_HINT = (
    "on a PC without a Jetson `pip install tensorrt-rtx` (TensorRT's ONNX parser and builder, runs on a CPU); "
    "on a Jetson JetPack's bindings (`sudo apt install python3-libnvinfer`)"
)


@dataclass(frozen=True)
class TrtVersion:
    """A TensorRT version and what its Python API, ONNX parser and trtexec offer.

    Every version gate edgevit applies is a property here, so the API conformance test
    (tests/trt) can check each gate against the names NVIDIA's bindings define per release.
    """

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

    # -- build modes -------------------------------------------------------------------------------
    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 (and TensorRT-RTX) removed weak typing: no FP16/INT8 builder flags."""
        return self.is_rtx or self.major >= 11

    @property
    def has_builder_precision_flags(self) -> bool:
        """``BuilderFlag.FP16/INT8``, ``ILayer.precision``/``set_output_type`` and the precision
        constraint flags: TensorRT 8.x to 10.x (deprecated from 10.12, removed in 11.0)."""
        return not self.strongly_typed_only

    @property
    def prefers_strongly_typed(self) -> bool:
        """Weak typing is deprecated from 10.12: build strongly typed there and later."""
        return self.is_rtx or self.tuple >= (10, 12, 0)

    @property
    def has_strongly_typed(self) -> bool:
        """``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: TensorRT 10.0+ (absent in 8.x)."""
        return self.is_rtx or self.major >= 10

    @property
    def needs_explicit_batch_flag(self) -> bool:
        """``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``: required for ONNX on 8.x, ignored in
        10.x, removed from the Python enum in 11.0."""
        return not self.is_rtx and self.major < 10

    @property
    def has_implicit_int8(self) -> bool:
        """Calibrators and BuilderFlag.INT8 exist before 11 (deprecated from 10.1)."""
        return not self.is_rtx and self.major < 11

    @property
    def has_opt_level(self) -> bool:
        """``IBuilderConfig.builder_optimization_level`` / trtexec ``--builderOptimizationLevel``: 8.6+."""
        return self.is_rtx or self.tuple >= (8, 6, 0)

    @property
    def parses_layernorm(self) -> bool:
        """onnx-tensorrt has a LayerNormalization importer from 8.6 (8.5-GA's operator table: N).
        Older versions get the decomposed graph (:mod:`edgevit.engine.decompose`)."""
        return self.is_rtx or self.tuple >= (8, 6, 0)

    # -- DLA -----------------------------------------------------------------------------------------
    def dla_refusal(self, device_model: str = "") -> str:
        """Why this TensorRT cannot build for DLA on the device named ``device_model`` ("" when it can).

        TensorRT 11.4.1 release notes: DLA is back on Jetson AGX Orin with JetPack 7.2.2 or later
        (strongly typed networks only); "DLA was unavailable in TensorRT 11.0 through 11.3",
        11.4.0 only on Windows on ARM, and never on Thor.
        """
        if self.is_rtx:
            return "TensorRT-RTX has no DLA"
        if self.major < 11:
            return ""
        if self.tuple < (11, 4, 1):
            return f"{self} has no DLA on Jetson (TensorRT 11.0-11.4.0; 11.4.1 brings it back on AGX Orin)"
        if "agx orin" not in device_model.lower():
            return (
                f"{self} supports DLA only on Jetson AGX Orin (JetPack 7.2.2+), not on {device_model or 'this device'}"
            )
        return ""

    # -- implicit INT8 cache ---------------------------------------------------------------------------
    @property
    def version_number(self) -> int:
        """``NV_TENSORRT_VERSION``: MAJOR*1000 + MINOR*100 + PATCH on 8.x (NvInferRuntimeCommon.h /
        NvInferRuntimeBase.h of 8.5/8.6), MAJOR*10000 + MINOR*100 + PATCH from 10.0
        (``NV_TENSORRT_VERSION_INT`` in NvInferRuntimeBase.h): 8.6.1 -> 8601, 10.3.0 -> 100300."""
        base = 10000 if self.major >= 10 else 1000
        return self.major * base + self.minor * 100 + self.patch

    @property
    def calib_tag(self) -> str:
        """Header of an EntropyCalibration2 cache for this version: TensorRT reads a cache only when
        its header names its own version (``TRT-8502-...``, ``TRT-100300-...``)."""
        return f"TRT-{self.version_number}-EntropyCalibration2"

    # -- trtexec ------------------------------------------------------------------------------------
    @property
    def trtexec_has_mem_pool(self) -> bool:
        """``--memPoolSize=workspace:N`` from 8.4 (``--workspace=N`` before, removed in 10)."""
        return self.tuple >= (8, 4, 0)

    @property
    def trtexec_has_layer_precisions(self) -> bool:
        """``--precisionConstraints``, ``--layerPrecisions``, ``--layerOutputTypes``: 8.4 to 10.x."""
        return self.tuple >= (8, 4, 0) and self.major < 11

    @property
    def trtexec_strongly_typed_flag(self) -> bool:
        """``--stronglyTyped`` exists in 10.x trtexec; 11.x accepts it as a no-op (always strongly typed)."""
        return self.major == 10

    def __str__(self) -> str:
        prefix = "TensorRT-RTX " if self.is_rtx else "TensorRT "
        return prefix + (self.text or ".".join(map(str, self.tuple)))


def import_tensorrt(
    allow_rtx: bool = False, prefer_rtx: bool = False, hint: str = DEVICE_HINT
) -> tuple[ModuleType, TrtVersion]:
    """Import TensorRT (or, when allowed, TensorRT-RTX) and return it with its version.

    Args:
        allow_rtx: accept ``tensorrt_rtx`` when ``tensorrt`` is missing (parse/build checks).
        prefer_rtx: try ``tensorrt_rtx`` first.
        hint: what the error says to install (:data:`DEVICE_HINT` or :data:`CHECK_HINT`).

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
    raise BackendError(f"TensorRT is not importable ({'; '.join(errors)}); {hint}")


def make_logger(trt: ModuleType, min_severity: str = "WARNING", also: tuple[str, ...] = ()) -> CollectingLogger:
    """A TensorRT logger that keeps messages instead of printing them (library code never prints).

    Args:
        min_severity: keep messages of this severity and worse.
        also: keep messages containing any of these strings whatever their severity (the
            builder reports DLA placement at INFO, later versions at VERBOSE).
    """
    return CollectingLogger.create(trt, min_severity, also)


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
    def create(cls, trt: ModuleType, min_severity: str = "WARNING", also: tuple[str, ...] = ()) -> CollectingLogger:
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
                if rank <= limit or (also and any(a in str(msg) for a in also)):
                    with lock:
                        holder.records.append(LogRecord(name, str(msg)))

        holder.trt_logger = _Logger()
        return holder

    def errors(self) -> list[str]:
        return [r.message for r in self.records if r.severity in ("ERROR", "INTERNAL_ERROR")]

    def warnings(self) -> list[str]:
        return [r.message for r in self.records if r.severity == "WARNING"]

    def messages(self) -> list[str]:
        return [r.message for r in self.records]

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
