"""Fixtures of the fault suite (see tests/faults/faultkit.py for the helpers)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultkit import small_disk_reason


@dataclass
class RunCopy:
    """A private copy of the session's nano artifacts, which tests may damage."""

    dir: Path
    checkpoint: Path
    fp32: Path
    int8: Path
    table: Path


@pytest.fixture
def run_copy(nano_artifacts, tmp_path) -> RunCopy:
    d = tmp_path / "run"
    d.mkdir()
    for src in (nano_artifacts.checkpoint, nano_artifacts.fp32_onnx, nano_artifacts.int8_onnx):
        shutil.copy2(src, d / src.name)
    shutil.copy2(nano_artifacts.calib_table, d / "table.json")
    return RunCopy(d, d / "checkpoint.pt", d / "model.onnx", d / "model.int8.onnx", d / "table.json")


@pytest.fixture(scope="session")
def small_disk(tmp_path_factory) -> None:
    """Skip (with the reason) where a 200 KB tmpfs cannot be mounted."""
    reason = small_disk_reason(tmp_path_factory.mktemp("probe"))
    if reason:
        pytest.skip(reason)
