"""Issue #15, F8 and F9, and the new-user findings about `edgevit info`: numbers that
make no sense are refused (not silently reinterpreted), `inspect` refuses an INT8 model
made from another FP32 model, and `info` prints a readable summary (`--json`: everything)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
from faultkit import assert_one_line_error, run_cli

from edgevit import runtime
from edgevit.errors import InputError


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_validate_limit_must_be_positive(run_copy, tmp_path, limit):
    proc = run_cli("validate", str(run_copy.fp32), str(run_copy.int8), "--limit", limit, "--out", str(tmp_path), "-q")
    assert_one_line_error(proc, "--limit", "at least 1", f"got {limit}")
    assert not (tmp_path / "validation.json").exists()


@pytest.mark.parametrize("k", ["0", "-3"])
def test_predict_top_k_must_be_positive(run_copy, tmp_path, k):
    img = tmp_path / "d.png"
    cv2.imwrite(str(img), np.zeros((8, 8), np.uint8))
    proc = run_cli("predict", str(run_copy.int8), str(img), "--top-k", k)
    assert_one_line_error(proc, "--top-k", "at least 1")
    assert proc.stdout == ""


def test_python_predict_refuses_what_is_not_images(nano_artifacts):
    with runtime.load(nano_artifacts.int8_onnx) as model:
        for bad in (None, 3, "digit.png"):
            with pytest.raises(InputError):
                model.predict(bad)
        for k in (0, -3):
            with pytest.raises(InputError, match="top_k"):
                model.predict(np.zeros((1, 8, 8, 1), np.uint8), top_k=k)
        assert model.predict(np.zeros((1, 8, 8, 1), np.uint8), top_k=50).indices.shape == (1, 10)


def test_inspect_refuses_an_int8_model_of_another_fp32_model(run_copy, tmp_path):
    other = onnx.load(str(run_copy.fp32))
    other.doc_string = "another FP32 model (same graph, another file)"
    other_path = tmp_path / "other.onnx"
    onnx.save_model(other, str(other_path))
    out = tmp_path / "layers"
    proc = run_cli("inspect", str(other_path), str(run_copy.int8), "--limit", "16", "--out", str(out))
    assert_one_line_error(proc, "quantized from an FP32 model with sha256", "pass the FP32 model it was made from")
    assert not out.exists()


def test_info_is_a_summary_and_json_on_request(nano_artifacts):
    proc = run_cli("info", str(nano_artifacts.int8_onnx))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) <= 20, proc.stdout
    text = proc.stdout
    assert "INT8 Q/DQ" in lines[0] and "classes" in text and "SmoothQuant" in text and "--json" in text

    proc = run_cli("info", str(nano_artifacts.int8_onnx), "--json")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["precision"] == "int8" and meta["extra"]["quantization"]["smoothquant"]["scales"]
