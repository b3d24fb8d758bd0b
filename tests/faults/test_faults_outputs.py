"""Issue #15, F1 and F12: an output path that cannot be written is refused with one line
before the work starts; a full disk is one line naming the path, with nothing partial
left (on a 200 KB tmpfs where one can be mounted)."""

from __future__ import annotations

import pytest
from faultkit import assert_one_line_error, leftovers, run_cli, run_on_small_disk


# -- F1: bad output paths, refused before the work -----------------------------------------
def test_export_onto_a_folder(run_copy, tmp_path):
    (tmp_path / "x.onnx").mkdir()
    proc = run_cli("export", str(run_copy.checkpoint), "-o", str(tmp_path / "x.onnx"))
    assert_one_line_error(proc, "x.onnx", "is a folder")
    assert (tmp_path / "x.onnx").is_dir() and not any((tmp_path / "x.onnx").iterdir())
    assert not leftovers(tmp_path)


def test_export_below_a_file(run_copy, tmp_path):
    (tmp_path / "afile").write_text("mine")
    proc = run_cli("export", str(run_copy.checkpoint), "-o", str(tmp_path / "afile" / "m.onnx"))
    assert_one_line_error(proc, "afile", "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "mine"


def test_quantize_onto_a_folder_is_refused_before_calibrating(run_copy, tmp_path):
    out = tmp_path / "outdir"
    out.mkdir()
    proc = run_cli("quantize", str(run_copy.fp32), "-o", str(out), "--num-images", "64", "-q", cwd=tmp_path)
    assert_one_line_error(proc, "outdir", "is a folder")
    # nothing was calibrated: no table anywhere
    assert not list(tmp_path.rglob("*.cache")) and not (tmp_path / "calib").exists()
    assert not (run_copy.dir / "calib").exists()


def test_quantize_with_a_file_as_calibration_folder(run_copy, tmp_path):
    (tmp_path / "calibfile").write_text("")
    out = tmp_path / "q.onnx"
    proc = run_cli("quantize", str(run_copy.fp32), "-o", str(out), "--calib-dir", str(tmp_path / "calibfile"), "-q")
    assert_one_line_error(proc, "calibration folder", "calibfile", "is a file")
    assert not out.exists()


def test_train_into_a_file(tmp_path):
    (tmp_path / "afile").write_text("mine")
    proc = run_cli("train", "--epochs", "1", "--out", str(tmp_path / "afile"), "-q", cwd=tmp_path)
    assert_one_line_error(proc, "run folder", "afile", "is a file")
    assert (tmp_path / "afile").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_validate_report_into_a_file(run_copy, tmp_path):
    (tmp_path / "afile").write_text("mine")
    proc = run_cli("validate", str(run_copy.fp32), str(run_copy.int8), "--out", str(tmp_path / "afile"), "-q")
    assert_one_line_error(proc, "report folder", "afile", "is a file")
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("flag", ["--out", "--calib-dir"])
def test_pipeline_into_a_file(tmp_path, flag):
    (tmp_path / "afile").write_text("mine")
    args = ["pipeline", "--epochs", "1", "-q", flag, str(tmp_path / "afile")]
    if flag != "--out":
        args += ["--out", str(tmp_path / "run")]
    proc = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, "afile", "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# -- F12: disk full ------------------------------------------------------------------------
def _assert_disk_full(proc, listing: list[str], name: str) -> None:
    line = assert_one_line_error(proc, name, "No space left on device")
    assert "free some space" in line
    assert not [f for f in listing if f.endswith(".tmp") or ".partial-" in f], listing


def test_export_onto_a_full_disk(small_disk, run_copy, tmp_path):
    proc, listing = run_on_small_disk(
        tmp_path / "disk", "export", str(run_copy.checkpoint), "-o", str(tmp_path / "disk" / "m.onnx")
    )
    _assert_disk_full(proc, listing, "m.onnx")
    assert listing == []


def test_quantize_onto_a_full_disk(small_disk, run_copy, tmp_path):
    disk = tmp_path / "disk"
    proc, listing = run_on_small_disk(
        disk, "quantize", str(run_copy.fp32), "-o", str(disk / "q.onnx"), "--num-images", "64", "-q"
    )
    _assert_disk_full(proc, listing, "q.onnx")
    assert "./q.onnx" not in listing


def test_train_onto_a_full_disk(small_disk, tmp_path):
    disk = tmp_path / "disk"
    proc, listing = run_on_small_disk(
        disk, "train", "--epochs", "1", "--threads", "1", "--out", str(disk / "run"), "-q"
    )
    _assert_disk_full(proc, listing, "run")
