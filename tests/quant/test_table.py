from __future__ import annotations

import struct

import pytest

from edgevit.errors import ArtifactError
from edgevit.quant.table import (
    CalibrationTable,
    TensorRange,
    float_to_hex,
    hex_to_float,
    read_trt_cache,
    table_paths,
)


def make_table() -> CalibrationTable:
    return CalibrationTable(
        model_sha256="ab" * 32,
        method="percentile",
        num_images=64,
        image_source="digits:train",
        tensors={
            "images": TensorRange(min=-1.5, max=2.0, amax=2.0, method="percentile"),
            "/blocks.0/norm1/out": TensorRange(min=-3.0, max=5.0, amax=4.5, method="percentile", quantized=False),
        },
        settings={"percentile": 99.99},
        model_name="model.onnx",
    )


def test_hex_is_big_endian_ieee754_of_the_scale():
    assert float_to_hex(1.0) == "3f800000"
    assert hex_to_float("3c010204") == pytest.approx(1 / 127)
    assert float_to_hex(2.0 / 127) == struct.pack(">f", 2.0 / 127).hex()


def test_trt_cache_write_read_back_compare(tmp_path):
    table = make_table()
    path = tmp_path / "m.cache"
    table.save_trt_cache(path, tag="TRT-8502-EntropyCalibration2")
    header, scales = read_trt_cache(path)
    assert header == "TRT-8502-EntropyCalibration2"
    assert set(scales) == set(table.tensors)
    for name, r in table.tensors.items():
        assert scales[name] == pytest.approx(r.amax / 127, rel=1e-6)
    lines = path.read_text().splitlines()
    assert lines[1].split(": ")[1] == float_to_hex(2.0 / 127)


def test_json_table_round_trip_and_hash_check(tmp_path):
    table = make_table()
    path = tmp_path / "t.json"
    table.save(path)
    back = CalibrationTable.load(path)
    assert back == table
    back.check_model("ab" * 32, "model.onnx")
    with pytest.raises(ArtifactError, match="made for model sha256"):
        back.check_model("cd" * 32, "model.onnx")


def test_malformed_tables_and_caches(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        CalibrationTable.load(p)
    p.write_text('{"format": "something-else"}')
    with pytest.raises(ArtifactError, match="not an edgevit calibration table"):
        CalibrationTable.load(p)
    with pytest.raises(ArtifactError, match="TRT-"):
        read_trt_cache("images: 3c010204\n")
    with pytest.raises(ArtifactError, match="line 2"):
        read_trt_cache("TRT-8601-EntropyCalibration2\nimages 3c01\n")


def test_table_paths_name_the_model_and_hash(tmp_path):
    js, cache = table_paths(tmp_path, "runs/x/model.onnx", "0123456789abcdef" * 4, "entropy")
    assert js.name == "model-01234567.entropy.json" and cache.name == "model-01234567.entropy.cache"


def test_the_input_range_may_exceed_what_dark_images_showed(tmp_path):
    """The network input's bound comes from the preprocessing (what uint8 pixels can give), so
    a calibration set that never reached white does not make the table suspicious; any other
    tensor whose range is far beyond what was observed still is."""
    dark = {"images": TensorRange(-0.5, 0.4, 2.6, "input"), "x": TensorRange(-1.0, 1.0, 0.9, "percentile")}
    table = CalibrationTable("ab" * 32, "percentile", 8, "dark:train", dark)
    table.save(tmp_path / "t.json")
    assert CalibrationTable.load(tmp_path / "t.json").tensors["images"].amax == 2.6
    bad = dict(dark, x=TensorRange(-1.0, 1.0, 2.6, "percentile"))
    with pytest.raises(ArtifactError, match="far beyond the observed"):
        CalibrationTable("ab" * 32, "percentile", 8, "dark:train", bad).save(tmp_path / "u.json")
