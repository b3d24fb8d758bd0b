"""What ``edgevit build`` is asked to do: :class:`BuildOptions`, checked when made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgevit.errors import InputError

PRECISIONS = ("fp32", "fp16", "int8", "best")
MODES = ("auto", "strongly-typed", "builder-flags", "implicit-int8")
DEFAULT_BATCH_PROFILE = (1, 8, 32)
# Kept in FP32 when the rest runs in FP16: the ViT residual stream carries outliers whose
# squares overflow FP16 inside a LayerNorm, and TensorRT itself warns about FP16 LayerNorm.
DEFAULT_FP32_OPS = ("LayerNormalization", "Softmax")


def parse_batch_profile(text: str) -> tuple[int, int, int]:
    """``"1:8:32"`` -> (1, 8, 32); ``"16"`` -> (1, 16, 16).

    Raises:
        InputError: not ``min:opt:max`` with 1 <= min <= opt <= max, or one number.
    """
    parts = str(text).split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--batch-profile {text!r} is not min:opt:max (e.g. 1:8:32) or one number") from None
    if len(nums) == 1:
        nums = [1, nums[0], nums[0]]
    if len(nums) != 3 or not (1 <= nums[0] <= nums[1] <= nums[2]):
        raise InputError(f"--batch-profile {text!r} must be min:opt:max with 1 <= min <= opt <= max")
    return nums[0], nums[1], nums[2]


@dataclass
class BuildOptions:
    """What ``edgevit build`` was asked to do.

    Args:
        onnx: the FP32 ONNX or the INT8 Q/DQ ONNX.
        output: the engine path; default ``<engines_dir>/<model>.<precision>.engine``.
        precision: fp32, fp16, int8 or best; None picks ``best`` for a Q/DQ ONNX, else ``fp16``.
        batch_profile: the optimization profile's batch sizes (min, opt, max).
        calib_cache: implicit INT8 only: the calibration cache (or table) of ``edgevit quantize``.
        range_table: a calibration table whose ranges are checked against FP16's range.
        allow_rtx / prefer_rtx: accept ``tensorrt_rtx`` (parse/build checks on a CPU).
    """

    onnx: Path
    output: Path | None = None
    precision: str | None = None
    batch_profile: tuple[int, int, int] = DEFAULT_BATCH_PROFILE
    workspace_mib: int | None = None
    opt_level: int | None = None
    timing_cache: Path | None = None
    use_timing_cache: bool = True
    dla_core: int | None = None
    calib_cache: Path | None = None
    range_table: Path | None = None
    mode: str = "auto"
    engines_dir: Path = Path("engines")
    fp32_ops: tuple[str, ...] = DEFAULT_FP32_OPS
    allow_rtx: bool = False
    prefer_rtx: bool = False
    check_qdq: bool = True

    def __post_init__(self) -> None:
        self.onnx = Path(self.onnx)
        self.engines_dir = Path(self.engines_dir)
        if self.output is not None:
            self.output = Path(self.output)
            if self.output.suffix not in (".engine", ".plan"):
                raise InputError(f"engine path {self.output} must end in .engine or .plan")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InputError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.workspace_mib is not None and self.workspace_mib < 16:
            raise InputError(f"--workspace must be at least 16 MiB, got {self.workspace_mib}")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise InputError(f"--opt-level must be 0..5, got {self.opt_level}")
        b = tuple(int(n) for n in self.batch_profile)
        if len(b) != 3 or not (1 <= b[0] <= b[1] <= b[2]):
            raise InputError(f"batch profile {self.batch_profile} must be (min, opt, max) with 1 <= min <= opt <= max")
        self.batch_profile = (b[0], b[1], b[2])
        if self.dla_core is not None:
            if self.dla_core < 0:
                raise InputError(f"--dla-core must be 0 or more, got {self.dla_core}")
            if len(set(b)) != 1:
                # TensorRT's DLA restrictions: "the profile's min, max, and opt values must be equal";
                # a dynamic profile makes TensorRT run everything on the GPU instead.
                raise InputError(
                    f"DLA needs a static batch (min = opt = max), got --batch-profile {b[0]}:{b[1]}:{b[2]}; "
                    f"use e.g. --batch-profile {b[1]}:{b[1]}:{b[1]} with --dla-core"
                )
