"""Issue #15: an interrupted pipeline must not leave a folder that mixes two runs, and
calibration tables follow the run and carry the settings that change them in their names
(two runs with different settings never overwrite each other's table)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from faultkit import assert_one_line_error, leftovers, run_cli


def test_calibration_tables_go_beside_the_model_and_name_their_settings(run_copy, tmp_path):
    out = tmp_path / "q" / "m.int8.onnx"
    for seed in ("0", "1"):
        proc = run_cli(
            "quantize", str(run_copy.fp32), "-o", str(out), "--num-images", "64", "--calib-seed", seed, "-q",
            cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    names = sorted(re.sub(r"^model-[0-9a-f]{8}\.", "model-SHA.", p.name) for p in (tmp_path / "q" / "calib").iterdir())
    assert names == [
        "model-SHA.percentile-n64-s0.cache",
        "model-SHA.percentile-n64-s0.json",
        "model-SHA.percentile-n64-s1.cache",
        "model-SHA.percentile-n64-s1.json",
    ]
    assert not (tmp_path / "calib").exists()  # not ./calib

    proc = run_cli(
        "quantize", str(run_copy.fp32), "-o", str(out), "--num-images", "64", "--smoothquant-alpha", "0.3", "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    other = [p.name for p in (tmp_path / "q" / "calib").glob("*.json") if not p.name.endswith(("-s0.json", "-s1.json"))]
    assert len(other) == 1 and re.fullmatch(r"model-[0-9a-f]{8}\.percentile-n64-s0-[0-9a-f]{6}\.json", other[0])


def test_pipeline_refuses_a_folder_with_other_files_before_training(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    (run / "model.onnx").write_bytes(b"previous")
    proc = run_cli("pipeline", "--epochs", "1", "--out", str(run), "-q")
    assert_one_line_error(proc, "notes.txt", "name a new folder")
    assert sorted(p.name for p in run.iterdir()) == ["model.onnx", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_pipeline_replaces_the_previous_run_whole(tmp_path):
    run = tmp_path / "run"
    (run / "layers").mkdir(parents=True)
    (run / "layers" / "layers.md").write_text("made from the previous run")
    (run / "model.int8.onnx").write_bytes(b"previous int8")
    proc = run_cli(
        "pipeline", "--epochs", "1", "--threads", "1", "--num-images", "64", "--min-agreement", "0",
        "--max-drop", "100", "--out", str(run), "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert not (run / "layers").exists()  # derived from the previous run: gone with it
    assert (run / "model.int8.onnx").read_bytes() != b"previous int8"
    for path in summary["artifacts"].values():
        assert Path(path).is_file() and Path(path).parent in (run, run / "calib"), path
    assert summary["artifacts"]["calibration_table"].startswith(str(run / "calib") + "/")
    assert not leftovers(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
