"""Calibration tables: what ``edgevit quantize`` measured, saved so nothing is measured twice.

Two files per calibration, under ``calib/``:

* ``<model>-<sha8>.<method>.json``: the table edgevit reads back (tensor -> range, scale,
  method, image count, the sha256 of the FP32 model it belongs to).
* ``<model>-<sha8>.<method>.cache``: the same ranges as a TensorRT calibration cache
  (first line ``TRT-<version>-EntropyCalibration2``, then ``name: <8 hex digits>``, the
  big-endian IEEE-754 bits of ``scale = amax / 127``), so a TensorRT 8.x device builds an
  implicit-INT8 engine from the FP32 ONNX without calibrating on the device.

Both are written atomically.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.artifacts import read_json, write_json_atomic, write_text_atomic
from edgevit.errors import ArtifactError

TABLE_FORMAT = "edgevit-calibration/1"
INT8_MAX = 127.0
# TensorRT 8.6's tag; TensorRT reads caches whose calibrator name matches its own.
DEFAULT_TRT_TAG = "TRT-8601-EntropyCalibration2"


@dataclass(frozen=True)
class TensorRange:
    """The calibrated range of one tensor. ``amax`` is the symmetric clipping bound."""

    min: float
    max: float
    amax: float
    method: str
    quantized: bool = True  # False: calibrated (for the TensorRT cache) but left in float by our Q/DQ policy
    candidates: dict[str, float] | None = None  # every method's bound from the same pass (method -> amax)

    @property
    def scale(self) -> float:
        return self.amax / INT8_MAX if self.amax > 0 else 1.0 / INT8_MAX

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "min": self.min,
            "max": self.max,
            "amax": self.amax,
            "scale": self.scale,
            "method": self.method,
            "quantized": self.quantized,
        }
        if self.candidates is not None:
            d["candidates"] = dict(self.candidates)
        return d


@dataclass
class CalibrationTable:
    """Ranges of a model's tensors and how they were obtained.

    Args:
        model_sha256: sha256 of the FP32 ONNX the ranges were measured on.
        method: calibration method (``max``, ``percentile``, ``entropy``, ``mse``, ``auto``).
        num_images: how many calibration images were used.
        image_source: where they came from (``digits:train`` or a folder).
        tensors: tensor name -> :class:`TensorRange`.
        settings: method parameters (percentile, bins, seed, ...).
        transforms: offline graph edits the ranges were measured after, re-applied by
            ``quantize`` (``smoothquant``: per-channel scales; ``bias_correction``: input means).
        float_layers: MatMul/Gemm/Conv nodes left without Q/DQ (FP16 on the device).
        sensitivity: the per-layer scan and the fallback choice (``--budget``).
    """

    model_sha256: str
    method: str
    num_images: int
    image_source: str
    tensors: dict[str, TensorRange]
    settings: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""
    transforms: dict[str, Any] = field(default_factory=dict)
    float_layers: list[str] = field(default_factory=list)
    sensitivity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": TABLE_FORMAT,
            "model_name": self.model_name,
            "model_sha256": self.model_sha256,
            "method": self.method,
            "num_images": self.num_images,
            "image_source": self.image_source,
            "settings": self.settings,
            "tensors": {name: r.to_dict() for name, r in self.tensors.items()},
        }
        if self.transforms:
            d["transforms"] = self.transforms
        if self.float_layers:
            d["float_layers"] = list(self.float_layers)
        if self.sensitivity is not None:
            d["sensitivity"] = self.sensitivity
        return d

    def method_counts(self) -> dict[str, int]:
        """How many quantized tensors each range method chose (``auto`` mixes them)."""
        counts: dict[str, int] = {}
        for r in self.tensors.values():
            if r.quantized:
                counts[r.method] = counts.get(r.method, 0) + 1
        return dict(sorted(counts.items()))

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CalibrationTable:
        data = read_json(path, "calibration table")
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise ArtifactError(f"{path} is not an edgevit calibration table (format {TABLE_FORMAT}); recalibrate")
        try:
            tensors = {
                name: TensorRange(
                    min=float(t["min"]),
                    max=float(t["max"]),
                    amax=float(t["amax"]),
                    method=str(t.get("method", data["method"])),
                    quantized=bool(t.get("quantized", True)),
                    candidates={str(k): float(v) for k, v in t["candidates"].items()} if t.get("candidates") else None,
                )
                for name, t in data["tensors"].items()
            }
            return cls(
                model_sha256=str(data["model_sha256"]),
                method=str(data["method"]),
                num_images=int(data["num_images"]),
                image_source=str(data["image_source"]),
                tensors=tensors,
                settings=dict(data.get("settings") or {}),
                model_name=str(data.get("model_name", "")),
                transforms=dict(data.get("transforms") or {}),
                float_layers=[str(n) for n in data.get("float_layers") or []],
                sensitivity=data.get("sensitivity"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"calibration table {path} is malformed ({exc}); recalibrate") from exc

    def check_model(self, model_sha256: str, model_path: str | Path) -> None:
        """Refuse a table measured on another model."""
        if self.model_sha256 != model_sha256:
            raise ArtifactError(
                f"calibration table was made for model sha256 {self.model_sha256[:12]}, but {model_path} is "
                f"{model_sha256[:12]}; recalibrate with `edgevit quantize {model_path}` (without --calib-table)"
            )

    # -- TensorRT calibration cache --------------------------------------------------
    def to_trt_cache(self, tag: str = DEFAULT_TRT_TAG) -> str:
        lines = [tag]
        # the implicit path runs the original FP32 model: smoothed tensors get their own range
        original = (self.transforms.get("smoothquant") or {}).get("original_amax") or {}
        for name, r in self.tensors.items():
            scale = float(original[name]) / INT8_MAX if name in original else r.scale
            lines.append(f"{name}: {float_to_hex(scale)}")
        return "\n".join(lines) + "\n"

    def save_trt_cache(self, path: str | Path, tag: str = DEFAULT_TRT_TAG) -> None:
        write_text_atomic(path, self.to_trt_cache(tag))


def float_to_hex(value: float) -> str:
    """float32 -> the 8 hex digits TensorRT writes (big-endian IEEE-754 bits)."""
    return struct.pack(">f", value).hex()


def hex_to_float(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def read_trt_cache(path_or_text: str | Path) -> tuple[str, dict[str, float]]:
    """Parse a TensorRT calibration cache; return its header tag and tensor -> scale."""
    if isinstance(path_or_text, Path):
        if not path_or_text.is_file():
            raise ArtifactError(f"calibration cache {path_or_text} does not exist")
        text = path_or_text.read_text(encoding="ascii", errors="replace")
    else:
        text = path_or_text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise ArtifactError("calibration cache does not start with a TRT-<version>-<calibrator> line; recalibrate")
    scales: dict[str, float] = {}
    for n, line in enumerate(lines[1:], start=2):
        name, sep, hexval = line.rpartition(": ")
        if not sep or len(hexval.strip()) != 8:
            raise ArtifactError(f"calibration cache line {n} is malformed: {line[:80]!r}")
        try:
            scales[name] = hex_to_float(hexval.strip())
        except ValueError as exc:
            raise ArtifactError(f"calibration cache line {n} has a bad hex value: {line[:80]!r}") from exc
    return lines[0], scales


def table_paths(calib_dir: str | Path, model_path: str | Path, model_sha256: str, method: str) -> tuple[Path, Path]:
    """Where the table and the TensorRT cache of a calibration go."""
    stem = Path(model_path).stem
    base = Path(calib_dir) / f"{stem}-{model_sha256[:8]}.{method}"
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".cache")
