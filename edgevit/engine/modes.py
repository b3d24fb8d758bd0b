"""How a build will go, decided from the TensorRT version and the ONNX before anything is parsed.

Three build modes:

* ``strongly-typed`` (TensorRT >= 10.12, the only mode of 11.x and TensorRT-RTX): every
  tensor's precision comes from the graph. INT8 from the Q/DQ ONNX; FP16 (alone, or for the
  unquantized parts of an INT8 model, ``best``) from an FP16 conversion of it.
* ``builder-flags`` (TensorRT 8.5 - 10.x): the Q/DQ (or FP32) ONNX with the FP16/INT8 builder
  flags; LayerNorm and Softmax layers are constrained to FP32 as the strongly typed path keeps them.
* ``implicit-int8`` (TensorRT 8.x - 10.x; removed in 11): the FP32 ONNX plus the calibration
  cache written by ``edgevit quantize``; nothing is calibrated on the device.

TensorRT older than 8.6 has no LayerNormalization importer: those builds parse the graph with
LayerNorm decomposed into primitive ops (:mod:`edgevit.engine.decompose`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgevit.errors import InputError
from edgevit.trt.trtapi import TrtVersion


@dataclass
class BuildSetup:
    """The decisions of one build (what ``choose_setup`` returns)."""

    precision: str
    mode: str  # strongly-typed / builder-flags / implicit-int8
    builder_flags: list[str]  # "FP16", "INT8"
    convert_fp16: bool  # strongly typed FP16/best: parse an FP16 conversion of the ONNX
    source_is_qdq: bool
    decompose_layernorm: bool = False  # TensorRT < 8.6
    notes: list[str] = field(default_factory=list)

    @property
    def strongly_typed(self) -> bool:
        return self.mode == "strongly-typed"

    @property
    def constrain_fp32(self) -> bool:
        """Builder flags with a reduced precision: pin LayerNorm and Softmax layers to FP32
        (layer precision + output types + the precision-constraints flag)."""
        return not self.strongly_typed and bool(self.builder_flags)


def choose_setup(
    precision: str | None, source_is_qdq: bool, version: TrtVersion, calib_cache: bool, mode: str = "auto"
) -> BuildSetup:
    """Pick the build mode for this TensorRT and ONNX, or refuse a combination that cannot work.

    Raises:
        InputError: an impossible combination (with what to do instead).
    """
    precision = precision or ("best" if source_is_qdq else "fp16")
    decompose = not version.parses_layernorm
    notes: list[str] = []
    if decompose:
        notes.append(f"{version} has no LayerNormalization importer: LayerNorm is decomposed into primitive ops")
    if source_is_qdq and calib_cache:
        raise InputError(
            "--calib-cache is for the FP32 ONNX (implicit INT8); this ONNX already has Q/DQ nodes, drop it"
        )
    if source_is_qdq and precision in ("fp32", "fp16"):
        raise InputError(
            f"this ONNX is INT8 (Q/DQ): it cannot give an {precision} engine; "
            f"build the FP32 ONNX with --precision {precision}"
        )
    implicit = precision in ("int8", "best") and not source_is_qdq
    if implicit:
        if not calib_cache:
            raise InputError(
                f"--precision {precision} from an FP32 ONNX needs --calib-cache (implicit INT8, TensorRT < 11); "
                "or pass the INT8 Q/DQ ONNX from `edgevit quantize`"
            )
        if not version.has_implicit_int8:
            raise InputError(
                f"{version} has no implicit INT8 (calibration caches were removed in TensorRT 11); "
                "build the INT8 Q/DQ ONNX from `edgevit quantize` instead"
            )
        if mode not in ("auto", "implicit-int8"):
            raise InputError(f"--mode {mode} cannot use a calibration cache; use --mode implicit-int8 or auto")
        if version.major >= 10:
            notes.append("implicit INT8 is deprecated since TensorRT 10.1; prefer the Q/DQ ONNX")
        flags = ["INT8"] + (["FP16"] if precision == "best" else [])
        return BuildSetup(precision, "implicit-int8", flags, False, False, decompose, notes)
    if calib_cache:
        raise InputError(f"--calib-cache is only used for --precision int8/best from the FP32 ONNX, not {precision}")
    if mode == "implicit-int8":
        raise InputError("--mode implicit-int8 needs the FP32 ONNX, --precision int8/best and --calib-cache")
    if mode == "auto":
        mode = "strongly-typed" if version.prefers_strongly_typed else "builder-flags"
    if mode == "strongly-typed" and not version.has_strongly_typed:
        raise InputError(f"{version} has no strongly typed networks (TensorRT 10+); use --mode builder-flags")
    if mode == "builder-flags" and not version.has_builder_precision_flags:
        raise InputError(
            f"{version} has no precision builder flags (removed in TensorRT 11); use --mode strongly-typed"
        )
    if mode == "strongly-typed":
        return BuildSetup(precision, mode, [], precision in ("fp16", "best"), source_is_qdq, decompose, notes)
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"], "best": ["INT8", "FP16"]}[precision]
    return BuildSetup(precision, mode, flags, False, source_is_qdq, decompose, notes)
