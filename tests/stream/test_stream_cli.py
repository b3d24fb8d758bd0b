"""`edgevit camera` on a real video made from test-split digits, headless, as a user runs it."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from stream_doubles import edgevit_command, read_video, subprocess_env, to_frames, write_video

from edgevit import runtime
from edgevit.errors import EdgeVitError, InputError
from edgevit.stream.cli import register
from edgevit.stream.sinks import display_problem
from edgevit.stream.sources import gstreamer_available, open_source

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
        "--batch-size",
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
    assert stats["results"] > 0 and stats["sources"][0]["failures"] == 0


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


def test_flags_are_the_shared_ones(stream_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #12: --batch-size (not --batch), --sink only (no -o), -q/--quiet and --top-k shared."""
    for argv in (["--batch", "2"], ["-o", str(tmp_path / "r.jsonl")]):
        with pytest.raises(SystemExit) as excinfo:
            camera("synthetic://?fps=0&frames=3", "--model", str(stream_onnx), "--headless", *argv)
        assert excinfo.value.code == 2
    capsys.readouterr()
    out = tmp_path / "r.jsonl"
    rc = camera(
        "synthetic://?fps=0&frames=6&live=0",
        "--model",
        str(stream_onnx),
        "--batch-size",
        "3",
        "--top-k",
        "2",
        "-q",
        "--sink",
        str(out),
    )
    assert rc == 0 and capsys.readouterr().err == ""
    records = read_jsonl(out)
    assert len(records) == 6 and {r["batch"] for r in records} == {3} and all(len(r["top_k"]) == 2 for r in records)


def test_unreadable_sources_exit_2_and_leave_an_existing_output_alone(
    tmp_path: Path, stream_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #15 F6: `edgevit camera text.png --sink jsonl://r.jsonl` exits 2 with one line and
    never empties a good r.jsonl; no temporary file is left."""
    monkeypatch.chdir(tmp_path)
    Path("text.png").write_text("not an image")
    good = '{"source": "earlier run"}\n'
    Path("r.jsonl").write_text(good)
    Path("out.mp4").write_bytes(b"an earlier video")
    cmd = [*edgevit_command(), "camera", "text.png", "--model", str(stream_onnx), "--headless"]
    proc = subprocess.run(
        [*cmd, "--sink", "jsonl://r.jsonl", "--sink", "out.mp4", "--stats", "s.json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edgevit: error")]
    assert len(errors) == 1 and "no frame from any source" in errors[0] and "text.png" in errors[0]
    assert "Traceback" not in proc.stderr
    assert Path("r.jsonl").read_text() == good and Path("out.mp4").read_bytes() == b"an earlier video"
    assert not Path("s.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "r.jsonl", "text.png"]


def test_outputs_that_are_folders_are_refused_before_the_run(tmp_path: Path, stream_onnx: Path) -> None:
    """Issue #15 F7 and --stats DIR: one-line errors before anything runs, nothing left behind."""
    folder = tmp_path / "out.mp4"
    folder.mkdir()
    (tmp_path / "stats").mkdir()
    model = ["--model", str(stream_onnx), "--headless", "--max-frames", "3"]
    for argv, message in (
        (["--sink", str(folder)], "is a folder"),
        (["--sink", f"jsonl://{folder}"], "is a folder"),
        (["--stats", str(tmp_path / "stats")], "--stats .* is a folder"),
    ):
        with pytest.raises(InputError, match=message) as excinfo:
            camera("synthetic://?fps=0", *model, *argv)
        assert "\n" not in str(excinfo.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "stats"]
    assert not any(folder.iterdir())


def test_an_option_no_source_uses_is_a_warning(stream_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #17.7: --rtsp-latency on the FFmpeg path (and --flip without csi://) say they do nothing."""
    rc = camera(
        "synthetic://?fps=0&frames=3&live=0",
        "--model",
        str(stream_onnx),
        "--headless",
        "-q",
        "--rtsp-latency",
        "100",
        "--flip",
        "2",
        "--width",
        "64",
    )
    assert rc == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("edgevit camera: warning: --rtsp-latency does nothing") for line in err)
    assert any(line.startswith("edgevit camera: warning: --flip does nothing") for line in err)
    assert not any("--width" in line for line in err)  # synthetic:// uses it
    if not gstreamer_available():  # pip's OpenCV: RTSP goes through FFmpeg, which has no jitter buffer
        from edgevit.stream.cli import unused_option_warnings

        src = open_source("rtsp://127.0.0.1:9/x", latency_ms=100)
        (warning,) = unused_option_warnings([src], {"latency_ms": 100})
        assert "FFmpeg" in warning


def test_synthetic_digits_are_recognized_by_the_digits_model(nano_artifacts) -> None:
    """The README's first demo: the test pattern shows digits the pipeline's model knows."""
    source = open_source("synthetic://")
    frames = source.render_glyphs()
    with runtime.load(nano_artifacts.int8_onnx) as model:
        import cv2

        pred = model.predict([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames], top_k=1)
    correct = sum(int(pred.indices[d, 0]) == d for d in range(10))
    assert correct >= 8, pred.indices[:, 0]
