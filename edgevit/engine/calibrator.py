"""Implicit INT8 (TensorRT 8.x, up to 10.x where it is deprecated): feed the builder the
calibration cache ``edgevit quantize`` wrote, through an ``IInt8EntropyCalibrator2`` that
never calibrates on the device (``get_batch`` returns None)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from edgevit.errors import ArtifactError
from edgevit.quant.table import CalibrationTable, read_trt_cache


def cache_for_version(source: str | Path, tag: str) -> bytes:
    """The cache text with its header set to ``tag`` (the running TensorRT's own).

    TensorRT rejects a cache whose header names another calibrator or version
    ("Calibration table does not match calibrator algorithm type") and then tries to
    calibrate with no data; regenerating the header is the documented fix. ``source`` may be
    a ``.cache`` file or an edgevit calibration table (``.json``).
    """
    source = Path(source)
    if source.suffix == ".json":
        return CalibrationTable.load(source).to_trt_cache(tag).encode("ascii")
    header, scales = read_trt_cache(source)
    if not scales:
        raise ArtifactError(f"calibration cache {source} lists no tensors; recalibrate with `edgevit quantize`")
    if not header.endswith("EntropyCalibration2"):
        raise ArtifactError(f"calibration cache {source} is for {header}; edgevit writes EntropyCalibration2 caches")
    text = source.read_text(encoding="ascii", errors="replace")
    body = text.split("\n", 1)[1] if "\n" in text else ""
    return (tag + "\n" + body).encode("ascii")


def make_cache_calibrator(trt: ModuleType, cache: bytes, batch_size: int = 1) -> Any:
    """An ``IInt8EntropyCalibrator2`` that only reads ``cache`` (TensorRT Python API: 8.x-10.x)."""
    base = trt.IInt8EntropyCalibrator2

    class CacheOnlyCalibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # TensorRT requires the parent constructor to be called explicitly
            self._cache = cache
            self.batches_requested = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> None:
            self.batches_requested += 1  # TensorRT asks only when the cache was rejected
            return None

        def read_calibration_cache(self) -> bytes:
            return self._cache

        def write_calibration_cache(self, cache: Any) -> None:
            return None  # the cache came from edgevit; nothing new to keep

    return CacheOnlyCalibrator()
