"""SIGINT / SIGTERM during `edgevit camera` in a subprocess: outputs complete and readable."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from stream_doubles import edgevit_command, read_video, subprocess_env


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_with_complete_outputs(tmp_path: Path, stream_onnx: Path, signum: int) -> None:
    out_video, out_jsonl, stats = tmp_path / "out.mp4", tmp_path / "r.jsonl", tmp_path / "stats.json"
    cmd = [
        *edgevit_command(),
        "camera",
        "synthetic://?fps=60&width=320&height=240",
        "--model",
        str(stream_onnx),
        "--sink",
        str(out_video),
        "--sink",
        f"jsonl://{out_jsonl}",
        "--stats",
        str(stats),
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            partial = list(tmp_path.glob(".r.partial-*.jsonl"))  # results so far, whole lines
            if partial and len(partial[0].read_text().splitlines()) >= 30:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        assert not out_video.exists() and not out_jsonl.exists()  # outputs appear only once complete
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr

    lines = out_jsonl.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]  # every line whole and valid
    assert len(records) >= 30
    assert [r["frame"] for r in records] == sorted(r["frame"] for r in records)
    frames = read_video(out_video)  # finalized: OpenCV reads it to the end
    assert len(frames) == len(records)
    assert frames[0].shape == (240, 320, 3)
    summary = json.loads(stats.read_text())
    assert summary["results"] == len(records)
    assert summary["stopped_by"] == signal.Signals(signum).name
    assert f"{len(records)} frames" in stdout
    assert not list(tmp_path.glob(".*partial*"))  # no temporary file left behind
