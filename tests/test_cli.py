"""The command line: results on stdout, one-line errors on stderr with exit code 2, no
traceback and no partial artifact for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from image_folders import make_image_folder

from edgevit.quant.table import CalibrationTable


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgevit.cli", *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=300
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgevit: error: ")
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_help_lists_the_commands():
    proc = run("--help")
    assert proc.returncode == 0
    for cmd in ("pipeline", "train", "export", "quantize", "validate", "predict", "info", "build", "camera"):
        assert cmd in proc.stdout


def test_export_quantize_validate_predict_info(nano_artifacts, tmp_path, digits):
    onnx_path = tmp_path / "m.onnx"
    proc = run("export", str(nano_artifacts.checkpoint), "-o", str(onnx_path))
    assert proc.returncode == 0, proc.stderr
    assert "max abs logit diff" in proc.stdout and onnx_path.exists()

    proc = run("quantize", str(onnx_path), "--num-images", "64", "--calib-dir", str(tmp_path / "calib"), "-q")
    assert proc.returncode == 0, proc.stderr
    int8 = tmp_path / "m.int8.onnx"
    assert int8.exists() and "18/26" in proc.stdout and "attention in float" in proc.stdout
    assert len(list((tmp_path / "calib").glob("m-*.percentile-n64-s0.json"))) == 1
    assert len(list((tmp_path / "calib").glob("m-*.percentile-n64-s0.cache"))) == 1

    proc = run("validate", str(onnx_path), str(int8), "--out", str(tmp_path / "report"), "-q")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report" / "validation.json").read_text())
    assert report["passed"] and report["num_images"] == len(digits.test)

    proc = run("validate", str(onnx_path), str(int8), "--min-agreement", "100.1", "--out", str(tmp_path), "-q")
    assert proc.returncode == 1 and "agreement" in proc.stderr

    img_path = tmp_path / "digit.png"
    cv2.imwrite(str(img_path), cv2.resize(digits.test.images[0], (32, 32)))
    proc = run("predict", str(int8), str(img_path), "--json", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["image"] == str(img_path) and len(rec["top_k"]) == 2

    proc = run("info", str(int8), "--json")
    assert json.loads(proc.stdout)["precision"] == "int8"


def test_predict_on_every_cpu_backend_agrees(nano_artifacts, tmp_path, digits):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'edgevit[openvino]')")
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"d{i}.png")
        cv2.imwrite(str(paths[-1]), digits.test.images[i])
    tops = {}
    # the FP32 artifact: both compute the same function (INT8 integer kernels differ by backend
    # and CPU: on CPUs without VNNI OpenVINO's u8 x s8 kernels saturate, ONNX Runtime's are avoided)
    for backend in ("onnxruntime", "openvino"):
        proc = run("predict", str(nano_artifacts.fp32_onnx), *map(str, paths), "--json", "--backend", backend)
        assert proc.returncode == 0, proc.stderr
        tops[backend] = [json.loads(line)["top_k"][0]["index"] for line in proc.stdout.splitlines()]
    assert tops["onnxruntime"] == tops["openvino"] and len(tops["openvino"]) == 4


def test_runtime_options_that_do_not_fit_the_backend_are_errors(nano_artifacts, tmp_path):
    img = tmp_path / "d.png"
    cv2.imwrite(str(img), np.zeros((8, 8), np.uint8))
    int8 = str(nano_artifacts.int8_onnx)
    assert_one_line_error(
        run("predict", int8, str(img), "--backend", "openvino", "--provider", "cuda"), "ONNX Runtime setting"
    )
    assert_one_line_error(run("predict", int8, str(img), "--openvino-precision", "bf16"), "OpenVINO setting")
    assert_one_line_error(run("predict", int8, str(img), "--backend", "tensorrt"), "edgevit build")


def test_bad_inputs_one_line_exit_2(nano_artifacts, tmp_path):
    assert_one_line_error(run("export", str(tmp_path / "missing.pt")), "does not exist")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    assert_one_line_error(run("export", str(corrupt), "-o", str(tmp_path / "x.onnx")), "corrupt")

    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"not an onnx file")
    assert_one_line_error(run("quantize", str(bad_onnx)), "not a readable ONNX model")
    assert_one_line_error(run("predict", str(bad_onnx), "whatever.png"), "not a readable ONNX model")

    bad_table = tmp_path / "bad.json"
    bad_table.write_text("{")
    assert_one_line_error(run("quantize", str(nano_artifacts.fp32_onnx), "--calib-table", str(bad_table)), "JSON")

    foreign = CalibrationTable.load(nano_artifacts.calib_table)
    foreign.model_sha256 = "f" * 64
    foreign.save(tmp_path / "foreign.json")
    out = tmp_path / "q.onnx"
    proc = run(
        "quantize", str(nano_artifacts.fp32_onnx), "-o", str(out), "--calib-table", str(tmp_path / "foreign.json")
    )
    assert_one_line_error(proc, "made for model sha256", "recalibrate")
    assert not out.exists()

    assert_one_line_error(run("quantize", str(nano_artifacts.fp32_onnx), "--num-images", "1"), "at least 2")

    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir(parents=True)
    assert_one_line_error(run("train", "--data", str(empty), "--out", str(tmp_path / "r"), "-q"), "no train images")
    make_image_folder(tmp_path / "oneclass", {"only": 4})
    assert_one_line_error(run("train", "--data", str(tmp_path / "oneclass"), "-q"), "at least two")

    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.zeros((8, 8, 3), np.uint8))
    # An RGB PNG is converted to gray by `predict` (it reads files); a wrong-channel array
    # passed through the API is an InputError: see tests/runtime. A non-image file is named:
    assert_one_line_error(run("predict", str(nano_artifacts.fp32_onnx), str(rgb)), "not a readable image")
    assert not any(p.suffix == ".tmp" for p in tmp_path.rglob("*"))


@pytest.mark.slow
def test_train_on_an_image_folder_end_to_end(tmp_path):
    make_image_folder(tmp_path / "data", {"left": 40, "mid": 40, "right": 40}, size=16)
    proc = run(
        "train",
        "--data",
        str(tmp_path / "data"),
        "--epochs",
        "8",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "run"),
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    ckpt = tmp_path / "run" / "checkpoint.pt"
    proc = run("export", str(ckpt))
    assert proc.returncode == 0, proc.stderr
    proc = run("info", str(tmp_path / "run" / "model.onnx"), "--json")
    info = json.loads(proc.stdout)
    assert info["class_names"] == ["left", "mid", "right"]
    assert info["preprocess"]["channels"] == 3 and info["preprocess"]["size"] == 16
    assert info["data"] == str(tmp_path / "data")
