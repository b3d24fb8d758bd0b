"""Sinks write through one pending-file mechanism: whole files at the final path, an
existing file kept when a run gives nothing (issue #15 F6/F7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stream_doubles import linear_model, read_video

from edgevit.errors import InputError
from edgevit.stream import CaptureError, FrameSource, JsonlSink, Stream, VideoSink
from edgevit.stream.sinks import PendingFile


def frames(n: int) -> list[np.ndarray]:
    return [np.full((16, 16, 3), (10 * i) % 256, np.uint8) for i in range(n)]


@pytest.mark.parametrize("name", ["r.jsonl", "out.avi"])
def test_an_output_appears_whole_at_close_and_replaces_the_old_one(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    out.write_bytes(b"the previous run")
    stream = Stream(linear_model(), [FrameSource(frames(5), "f://")], [out])
    for i, _ in enumerate(stream):
        assert out.read_bytes() == b"the previous run"  # untouched while running
        partial = list(tmp_path.glob(f".{out.stem}.partial-*{out.suffix}"))
        assert len(partial) == 1 or (i == 0 and name.endswith(".avi"))
    if name.endswith(".jsonl"):
        assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == list(range(5))
    else:
        assert len(read_video(out)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("name", ["r.jsonl", "out.avi"])
def test_a_run_without_results_leaves_an_existing_output_alone(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    out.write_bytes(b"the previous run")
    stream = Stream(linear_model(), [FrameSource([np.zeros((0, 3), np.uint8)], "bad://")], [out])
    with pytest.raises(CaptureError, match="no frame from any source"):
        list(stream)
    assert out.read_bytes() == b"the previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_an_interrupted_run_keeps_whole_lines(tmp_path: Path) -> None:
    """A run that stops early (Ctrl-C, an error) still commits the lines it wrote."""
    out = tmp_path / "r.jsonl"
    stream = Stream(linear_model(), [FrameSource(frames(50), "f://")], [f"jsonl://{out}"], batch_size=1)
    for i, _ in enumerate(stream):
        if i == 9:
            stream.stop()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) >= 10 and [r["frame"] for r in records] == list(range(len(records)))


def test_outputs_that_are_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "v.mp4").mkdir()
    (tmp_path / "r.jsonl").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        VideoSink(tmp_path / "v.mp4")
    with pytest.raises(InputError, match="is a folder"):
        JsonlSink(tmp_path / "r.jsonl")
    # one video per source: out-1.mp4 is a folder
    (tmp_path / "out-1.mp4").mkdir()
    sink = VideoSink(tmp_path / "out.mp4")
    with pytest.raises(InputError, match=r"out-1\.mp4 is a folder"):
        sink.open([FrameSource(frames(1), "a://"), FrameSource(frames(1), "b://")])
    assert not list(tmp_path.glob(".*"))


def test_pending_file_commit_and_discard(tmp_path: Path) -> None:
    p = PendingFile(tmp_path / "sub" / "x.jsonl")
    assert p.tmp.parent == tmp_path / "sub" and p.tmp.name.startswith(".x.partial-") and p.tmp.suffix == ".jsonl"
    p.commit()  # nothing written: nothing to rename
    assert not p.path.exists()
    p.tmp.write_text("a\n")
    p.commit()
    assert p.path.read_text() == "a\n" and not p.tmp.exists()
    q = PendingFile(p.path)
    q.tmp.write_text("b\n")
    q.discard()
    assert p.path.read_text() == "a\n" and not q.tmp.exists()
