"""Calibration tables: what ``edgevit quantize`` measured, saved so nothing is measured twice.

Two files per calibration, in ``calib/`` beside the INT8 model (``--calib-dir``), named
``<model>-<sha8>.<tag>`` where the tag says what changes the table
(:func:`edgevit.quant.quantize.table_tag`: ``percentile-n512-s0``):

* ``<model>-<sha8>.<tag>.json``: the table edgevit reads back (tensor -> range, scale,
  method, image count, the sha256 of the FP32 model it belongs to).
* ``<model>-<sha8>.<tag>.cache``: the same ranges as a TensorRT calibration cache
  (first line ``TRT-<version>-EntropyCalibration2``, then ``name: <8 hex digits>``, the
  big-endian IEEE-754 bits of ``scale = amax / 127``), so a TensorRT 8.x device builds an
  implicit-INT8 engine from the FP32 ONNX without calibrating on the device.

Both are written atomically. A table is checked on every load and before it is saved
(:meth:`CalibrationTable.validate`): a NaN, negative, zero or huge range, or SmoothQuant
scales that do not fit the model, is refused with one line before anything is written,
so a hand-edited or damaged table never turns into a chance-level INT8 model or a bogus
TensorRT cache.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.artifacts import read_json, write_json_atomic, write_text_atomic
from edgevit.errors import ArtifactError

TABLE_FORMAT = "edgevit-calibration/1"
INT8_MAX = 127.0
# TensorRT 8.6's tag; TensorRT reads caches whose calibrator name matches its own.
DEFAULT_TRT_TAG = "TRT-8601-EntropyCalibration2"
# The largest range a table may hold: FP16's largest value. The layers TensorRT keeps out of
# INT8 run in FP16 on the device, so a tensor beyond it overflows there whatever its scale.
AMAX_LIMIT = 65504.0
# A clipping bound lies inside what calibration observed (every method clips the observed
# |x| maximum, never widens it); the slack only covers rounding and future methods.
AMAX_OVER_OBSERVED = 2.0
# SmoothQuant scales: calibration clips them to [1e-4, 1e4]; these wider limits only
# catch damage (a scale of 0 or 1e30 folds garbage into the LayerNorm).
SCALE_LIMITS = (1e-6, 1e6)


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
        self.validate(where=f"calibration table {path}")
        write_json_atomic(path, self.to_dict(), what="calibration table")

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
            table = cls(
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
        table.validate(where=f"calibration table {path}")
        return table

    def validate(self, model: Any = None, where: str = "calibration table") -> None:
        """Refuse a table whose numbers cannot make a sound INT8 model: the one check of
        calibration tables, run by :meth:`load`, before :meth:`save`, and with the model
        where the table is applied (``edgevit quantize``).

        On its own: every range finite with ``min <= max``; every ``amax`` finite, positive
        (0 only for a tensor observed all zero), at most :data:`AMAX_LIMIT` and at most
        :data:`AMAX_OVER_OBSERVED` times the observed ``|x|`` maximum; SmoothQuant scales
        finite and within :data:`SCALE_LIMITS`, its ``alpha`` in [0, 1] and its original
        ranges like ``amax``; bias-correction means finite; a positive image count.

        With ``model`` (the ``onnx.ModelProto`` the table was measured on, its sha256
        already checked by :meth:`check_model`): every tensor and float layer exists in it,
        SmoothQuant scales belong to a LayerNorm that feeds weighted ops and have one value
        per channel of it, and bias-correction means have one value per input channel of
        their layer.

        Args:
            model: the FP32 ONNX model, or None for the checks that need no model.
            where: how the table is named in messages (its path).

        Raises:
            ArtifactError: one line naming the table, the entry and what is wrong.
        """

        def refuse(problem: str) -> ArtifactError:
            return ArtifactError(f"{where}: {problem}; recalibrate (`edgevit quantize` without --calib-table)")

        if self.num_images < 1:
            raise refuse(f"num_images is {self.num_images}")
        if not self.tensors:
            raise refuse("it holds no tensor ranges")
        for name, r in self.tensors.items():
            if not (math.isfinite(r.min) and math.isfinite(r.max) and r.min <= r.max):
                raise refuse(f"tensor {name!r} has observed range [{r.min}, {r.max}]")
            # the network input's range comes from the preprocessing, not the observed pixels
            # (a dark calibration set never reaches white): not bounded by what was observed
            observed = None if r.method == "input" else max(abs(r.min), abs(r.max))
            _check_amax(refuse, f"tensor {name!r}", r.amax, observed)
            for method, bound in (r.candidates or {}).items():
                if not (math.isfinite(bound) and bound >= 0):
                    raise refuse(f"tensor {name!r} has {method} candidate range {bound}")
        sq = self.transforms.get("smoothquant")
        if sq:
            if not isinstance(sq, dict) or not isinstance(sq.get("scales"), dict):
                raise refuse("its SmoothQuant record has no scales")
            alpha = sq.get("alpha", 0.5)
            if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
                raise refuse(f"SmoothQuant alpha is {alpha!r}, not in [0, 1]")
            lo, hi = SCALE_LIMITS
            for out, values in sq["scales"].items():
                vals = _floats(values)
                if vals is None or not vals:
                    raise refuse(f"SmoothQuant scales of {out!r} are not a list of numbers")
                bad = next((v for v in vals if not (math.isfinite(v) and lo <= v <= hi)), None)
                if bad is not None:
                    raise refuse(f"SmoothQuant scales of {out!r} hold {bad}, outside [{lo:g}, {hi:g}]")
            for t, amax in (sq.get("original_amax") or {}).items():
                _check_amax(refuse, f"SmoothQuant original range of {t!r}", _number(amax), None)
        bc = self.transforms.get("bias_correction")
        if bc:
            means = bc.get("input_means") if isinstance(bc, dict) else None
            if not isinstance(means, dict):
                raise refuse("its bias-correction record has no input means")
            for t, values in means.items():
                vals = _floats(values)
                if vals is None or not all(math.isfinite(v) for v in vals):
                    raise refuse(f"bias-correction means of {t!r} are not finite numbers")
        if model is not None:
            self._validate_against(model, refuse)

    def _validate_against(self, model: Any, refuse: Callable[[str], ArtifactError]) -> None:
        from edgevit.quant import graph as G
        from edgevit.quant.smoothquant import find_layernorm_pairs

        g = model.graph
        known = {i.name for i in g.input} | {o for n in g.node for o in n.output} | {t.name for t in g.initializer}
        missing = [t for t in self.tensors if t not in known]
        if missing:
            raise refuse(f"tensor {missing[0]!r} is not in the model ({len(missing)} such)")
        nodes = {n.name for n in g.node}
        unknown = [n for n in self.float_layers if n not in nodes]
        if unknown:
            raise refuse(f"float layer {unknown[0]!r} is not a node of the model")
        inits = G.initializers(model)
        sq = self.transforms.get("smoothquant")
        if sq:
            pairs = {p.output: p for p in find_layernorm_pairs(model)}
            for out, values in sq["scales"].items():
                pair = pairs.get(out)
                if pair is None:
                    raise refuse(f"SmoothQuant scales are for {out!r}, not a LayerNorm output feeding weighted ops")
                channels = int(G.to_array(inits[pair.gamma]).size)
                if len(values) != channels:
                    raise refuse(
                        f"SmoothQuant scales of {out!r} have {len(values)} values but its LayerNorm has {channels} channels"
                    )
            for t in sq.get("original_amax") or {}:
                if t not in known:
                    raise refuse(f"SmoothQuant original range of {t!r} is for a tensor not in the model")
        bc = self.transforms.get("bias_correction")
        if bc:
            width = {}
            for n in g.node:
                lw = G.linear_weight(model, n, inits)
                if lw is not None:
                    dims = list(inits[lw[0]].dims)
                    width[n.input[0]] = int(dims[1] if lw[2] else dims[0])  # K of [K, N] (Gemm transB: [N, K])
            for t, values in bc["input_means"].items():
                if t not in width:
                    raise refuse(f"bias-correction means are for {t!r}, not the input of a MatMul/Gemm")
                if len(values) != width[t]:
                    raise refuse(
                        f"bias-correction means of {t!r} have {len(values)} values, its layer takes {width[t]}"
                    )

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
        write_text_atomic(path, self.to_trt_cache(tag), what="TensorRT calibration cache")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _floats(values: Any) -> list[float] | None:
    """``values`` as a list of floats (NaN for what is not a number), or None if not a list."""
    if not isinstance(values, (list, tuple)):
        return None
    return [_number(v) for v in values]


def _check_amax(refuse: Callable[[str], ArtifactError], what: str, amax: float, observed: float | None) -> None:
    if not math.isfinite(amax) or amax < 0:
        raise refuse(f"{what} has range (amax) {amax}")
    if amax == 0 and observed != 0:
        raise refuse(
            f"{what} has range (amax) 0" + (f" but values up to {observed:.4g} were observed" if observed else "")
        )
    if amax > AMAX_LIMIT:
        raise refuse(f"{what} has range (amax) {amax:.4g}, beyond FP16's {AMAX_LIMIT:g}")
    if observed is not None and amax > AMAX_OVER_OBSERVED * observed:
        raise refuse(f"{what} has range (amax) {amax:.4g}, far beyond the observed {observed:.4g}")


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


def table_paths(calib_dir: str | Path, model_path: str | Path, model_sha256: str, tag: str) -> tuple[Path, Path]:
    """Where the table and the TensorRT cache of a calibration go: ``<model>-<sha8>.<tag>``."""
    stem = Path(model_path).stem
    base = Path(calib_dir) / f"{stem}-{model_sha256[:8]}.{tag}"
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".cache")
