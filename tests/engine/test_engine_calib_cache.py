"""The calibration cache of the implicit-INT8 path (TensorRT 8.x-10.x): format, round trip, header
regeneration for the running TensorRT (the numbering per version: tests/trt/test_trt_trtapi.py),
and the cache-only calibrator."""

from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgevit.engine.calibrator import cache_for_version, make_cache_calibrator
from edgevit.errors import ArtifactError
from edgevit.quant.table import CalibrationTable, float_to_hex, read_trt_cache


def test_cache_round_trip(nano_variants: SimpleNamespace, tmp_path: Path) -> None:
    """Write the table as a cache, read it back: same tensors, scale = amax / 127 as big-endian
    float32 hex. The cache is for implicit INT8 on the *FP32* model, so a tensor SmoothQuant
    rescaled (a LayerNorm output) gets the range of the unsmoothed tensor."""
    table = CalibrationTable.load(nano_variants.calib_table)
    original = table.transforms["smoothquant"]["original_amax"]  # SmoothQuant is the default
    assert original and set(original) <= set(table.tensors)
    path = tmp_path / "x.cache"
    table.save_trt_cache(path, tag="TRT-8502-EntropyCalibration2")
    header, scales = read_trt_cache(path)
    assert header == "TRT-8502-EntropyCalibration2"
    assert set(scales) == set(table.tensors)
    for name, r in table.tensors.items():
        amax = float(original[name]) if name in original else r.amax
        want = struct.unpack(">f", struct.pack(">f", amax / 127.0 if amax > 0 else 1 / 127.0))[0]
        assert scales[name] == pytest.approx(want, rel=0, abs=0)
        if name in original:
            assert scales[name] != pytest.approx(r.scale, rel=1e-6)  # not the smoothed range
    lines = path.read_text().splitlines()
    assert all(len(line.rsplit(": ", 1)[1]) == 8 for line in lines[1:])


def test_lead_cache_matches_table(nano_variants: SimpleNamespace) -> None:
    """The cache `edgevit quantize` wrote lists the table's tensors with the table's scales."""
    table = CalibrationTable.load(nano_variants.calib_table)
    _, scales = read_trt_cache(Path(nano_variants.trt_cache))
    assert set(scales) == set(table.tensors)
    name, r = next(iter(table.tensors.items()))
    assert float_to_hex(scales[name]) == float_to_hex(r.scale)


def test_header_regenerated_body_kept(nano_variants: SimpleNamespace) -> None:
    """TensorRT rejects a cache whose header is not its own; we rewrite the header, never the scales."""
    src = Path(nano_variants.trt_cache)
    out = cache_for_version(src, "TRT-8502-EntropyCalibration2").decode()
    original = src.read_text()
    assert out.splitlines()[0] == "TRT-8502-EntropyCalibration2"
    assert out.splitlines()[1:] == original.splitlines()[1:]
    from_table = cache_for_version(nano_variants.calib_table, "TRT-8502-EntropyCalibration2").decode()
    assert read_trt_cache(from_table)[1] == read_trt_cache(out)[1]


def test_bad_caches_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.cache"
    empty.write_text("TRT-8601-EntropyCalibration2\n")
    with pytest.raises(ArtifactError, match="lists no tensors"):
        cache_for_version(empty, "TRT-8502-EntropyCalibration2")
    minmax = tmp_path / "minmax.cache"
    minmax.write_text("TRT-8601-MinMaxCalibration\nx: 3c010204\n")
    with pytest.raises(ArtifactError, match="EntropyCalibration2"):
        cache_for_version(minmax, "TRT-8502-EntropyCalibration2")
    garbage = tmp_path / "garbage.cache"
    garbage.write_text("hello\n")
    with pytest.raises(ArtifactError):
        cache_for_version(garbage, "TRT-8502-EntropyCalibration2")


def test_cache_only_calibrator_never_asks_for_data() -> None:
    """The calibrator follows TensorRT's Python IInt8EntropyCalibrator2 protocol: the base
    constructor is called, get_batch returns None (no device calibration), the cache is returned."""

    class FakeBase:
        initialised = False

        def __init__(self) -> None:
            FakeBase.initialised = True

    fake_trt = SimpleNamespace(IInt8EntropyCalibrator2=FakeBase)
    cal = make_cache_calibrator(fake_trt, b"TRT-8502-EntropyCalibration2\nx: 3c010204\n", batch_size=4)
    assert FakeBase.initialised and isinstance(cal, FakeBase)
    assert cal.get_batch_size() == 4
    assert cal.read_calibration_cache().startswith(b"TRT-8502")
    assert cal.get_batch(["images"]) is None
    assert cal.batches_requested == 1
    assert cal.write_calibration_cache(b"other") is None
