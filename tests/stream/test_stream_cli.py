"""`edgevit camera` on a real video made from test-split digits, headless, as a user runs it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from stream_doubles import read_video, to_frames, write_video

from edgevit import runtime
from edgevit.errors import EdgeVitError, InputError
from edgevit.stream.cli import register
from edgevit.stream.sinks import display_problem
from edgevit.stream.sources import gstreamer_available

N_FRAMES = 120


def camera(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edgevit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["camera", *argv])
    return args.func(args)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def gray(frames: list[np.ndarray]) -> list[np.ndarray]:
    import cv2

    return [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]


@pytest.mark.parametrize("suffix,codec", [(".mp4", "mp4v"), (".mkv", "FFV1")])
def test_video_file_gets_one_result_per_frame_in_order_equal_to_predict(
    tmp_path: Path,
    stream_onnx: Path,
    test_digits: tuple[np.ndarray, np.ndarray],
    suffix: str,
    codec: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images = test_digits[0][:N_FRAMES]
    video = write_video(tmp_path / f"digits{suffix}", to_frames(images), codec=codec)
    out_video, out_jsonl, stats_json = tmp_path / "out.mp4", tmp_path / "r.jsonl", tmp_path / "stats.json"

    # the README command: edgevit camera video.mp4 --sink out.mp4 --sink jsonl://r.jsonl
    rc = camera(
        str(video),
        "--model",
        str(stream_onnx),
        "--sink",
        str(out_video),
        "--sink",
        f"jsonl://{out_jsonl}",
        "--batch",
        "8",
        "--stats",
        str(stats_json),
    )
    assert rc == 0

    records = read_jsonl(out_jsonl)
    assert [r["frame"] for r in records] == list(range(N_FRAMES))  # one per frame, in order
    assert {r["source"] for r in records} == {str(video)}
    assert all(r["latency_ms"] >= 0 and r["timestamp"] > 0 and len(r["top_k"]) == 5 for r in records)

    # each prediction equals predict() on the same frame read directly from the file
    direct = read_video(video)
    assert len(direct) == N_FRAMES
    with runtime.load(stream_onnx) as model:
        expected = model.predict(gray(direct), top_k=5)
        if codec == "FFV1":  # lossless: the frames are the test images themselves
            from_images = model.predict(images, top_k=5)
            np.testing.assert_array_equal(from_images.indices, expected.indices)
    got_idx = np.array([[t["index"] for t in r["top_k"]] for r in records])
    got_prob = np.array([[t["prob"] for t in r["top_k"]] for r in records])
    np.testing.assert_array_equal(got_idx[:, 0], expected.indices[:, 0])
    np.testing.assert_allclose(got_prob, expected.probs, atol=1e-5)
    assert [r["top_k"][0]["label"] for r in records] == [lab[0] for lab in expected.labels]

    # the annotated video has every frame; the summary says nothing was dropped
    assert len(read_video(out_video)) == N_FRAMES
    stats = json.loads(stats_json.read_text())
    assert stats["results"] == N_FRAMES and stats["dropped"] == 0
    assert stats["sources"][0]["corrupt"] == 0 and stats["mean_batch"] > 1
    assert stats["latency_ms"]["p50"] <= stats["latency_ms"]["p99"]
    assert f"{N_FRAMES} frames" in capsys.readouterr().out


def test_synthetic_runs_headless_for_a_duration(tmp_path: Path, stream_onnx: Path) -> None:
    stats_json = tmp_path / "s.json"
    rc = camera(
        "synthetic://?fps=50", "--model", str(stream_onnx), "--duration", "1", "--headless", "--stats", str(stats_json)
    )
    assert rc == 0
    stats = json.loads(stats_json.read_text())
    assert stats["stopped_by"] == "duration"
    assert 30 <= stats["results"] <= 60  # about 50 fps for one second


def test_user_errors_are_one_line_edgevit_errors(
    tmp_path: Path, stream_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ["--model", str(stream_onnx)]
    cases: list[tuple[list[str], str]] = [
        ([str(tmp_path / "missing.mp4"), *model], "does not exist"),
        (["synthetic://", *model, "--sink", "display://0", "--headless"], "contradict"),
        (["synthetic://", *model, "--sink", "udp://x"], "unknown sink"),
        (["synthetic://?colour=red", *model], "unknown option"),
        (["/dev/video99", *model], "no such camera"),
    ]
    if display_problem():  # no window possible here: refused with the reason
        cases.append((["synthetic://", *model, "--sink", "display://0"], "display|GUI"))
    if not gstreamer_available():  # pip's OpenCV: csi:// explains what to install
        cases.append((["csi://0", *model], "GStreamer"))
    for argv, message in cases:
        with pytest.raises(InputError, match=message) as excinfo:
            camera(*argv)
        assert "\n" not in str(excinfo.value)
    monkeypatch.chdir(tmp_path)  # no runs/ here and no --model
    with pytest.raises(EdgeVitError, match="--model"):
        camera("synthetic://")
