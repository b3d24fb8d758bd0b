"""Fixtures for the serving tests (helpers live in serve_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from serve_helpers import ServeProcess, start_serve


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[object]:
    """Start servers inside one test; every one is stopped at the end, whatever happens."""
    started: list[ServeProcess] = []

    def start(artifact: Path, extra: Sequence[str] = (), name: str = "nano") -> ServeProcess:
        s = start_serve(artifact, tmp_path / f"serve{len(started)}.log", extra, name)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
