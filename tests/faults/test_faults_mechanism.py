"""The one output mechanism behind F1, F11 and F12 (edgevit.artifacts): paths checked
before the work, files and run folders written whole or not at all, OSError turned into
one line. In-process, so it runs on every machine (no tmpfs needed)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from faultkit import leftovers

from edgevit.artifacts import atomic_output, atomic_output_dir, check_output_path, write_text_atomic
from edgevit.errors import ArtifactError


def test_an_oserror_while_writing_is_one_line_and_the_old_file_stays(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("good")
    with pytest.raises(ArtifactError) as info, atomic_output(target, "ONNX model") as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    msg = str(info.value)
    assert msg == f"cannot write the ONNX model {target}: No space left on device; free some space or write elsewhere"
    assert target.read_text() == "good"
    assert not leftovers(tmp_path)


def test_other_errors_pass_through_and_leave_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_output(tmp_path / "a.json") as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_check_output_path_refusals(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("")
    with pytest.raises(ArtifactError, match="is a folder"):
        check_output_path(tmp_path / "d", "file")
    with pytest.raises(ArtifactError, match="is a file, not a folder"):
        check_output_path(tmp_path / "f", "dir")
    with pytest.raises(ArtifactError, match="f is a file"):
        check_output_path(tmp_path / "f" / "deeper" / "x.onnx", "file")
    if Path("/dev/null").exists():
        with pytest.raises(ArtifactError, match="not a regular file"):
            check_output_path("/dev/null", "file")
    assert check_output_path(tmp_path / "new" / "deeper" / "x.onnx", "file") == tmp_path / "new" / "deeper" / "x.onnx"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(ArtifactError, match="f is a file"):
        write_text_atomic(tmp_path / "f" / "x.txt", "x")


def test_atomic_output_dir_replaces_whole_or_not_at_all(tmp_path):
    run = tmp_path / "run"
    with atomic_output_dir(run, "run folder", replaceable={"a", "b"}.__contains__) as work:
        (work / "a").write_text("1")
    assert (run / "a").read_text() == "1"

    with pytest.raises(RuntimeError), atomic_output_dir(run, "run folder", replaceable={"a", "b"}.__contains__) as work:
        (work / "b").write_text("2")
        raise RuntimeError("stage failed")
    assert sorted(p.name for p in run.iterdir()) == ["a"] and (run / "a").read_text() == "1"

    with atomic_output_dir(run, "run folder", replaceable={"a", "b"}.__contains__) as work:
        (work / "b").write_text("2")
    assert sorted(p.name for p in run.iterdir()) == ["b"]
    assert not leftovers(tmp_path)

    (run / "mine.txt").write_text("keep")
    ran = []
    with pytest.raises(ArtifactError, match=r"did not write \(mine.txt\)"):  # noqa: SIM117
        with atomic_output_dir(run, "run folder", replaceable={"a", "b"}.__contains__):
            ran.append(True)
    assert not ran and (run / "mine.txt").read_text() == "keep"
