from __future__ import annotations

import json

import pytest

from edgevit.cli import main


@pytest.mark.slow
def test_pipeline_meets_the_targets_on_the_builtin_digits(tmp_path, capsys):
    """The main job, as a new user runs it: nano on digits, FP32 >= 97%, INT8 drop <= 0.5
    points, agreement >= 99%, everything written, well under 5 minutes."""
    code = main(["pipeline", "--out", str(tmp_path / "run"), "--calib-dir", str(tmp_path / "calib"), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["fp32_top1"] >= 97.0
    assert summary["drop_points"] <= 0.5
    assert summary["agreement"] >= 99.0
    assert summary["int8_size_bytes"] < summary["fp32_size_bytes"]
    assert summary["fp32_images_per_s"] > 0 and summary["int8_images_per_s"] > 0
    assert summary["timings"]["total_s"] < 300
    for path in summary["artifacts"].values():
        assert (tmp_path / "run").exists() and __import__("pathlib").Path(path).exists(), path
    assert "test top-1" in out and "agreement" in out
