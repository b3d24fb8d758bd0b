"""Capture supervision as units: the backoff schedule and the stream's defaults (issue #17.4)."""

from __future__ import annotations

import inspect

from edgevit.stream import Stream
from edgevit.stream.capture import Backoff


def test_backoff_doubles_to_its_cap_and_restarts_once_frames_flow() -> None:
    b = Backoff(0.25, 2.0)
    assert [b.next() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    b.reset()
    assert b.next() == 0.25


def test_live_sources_are_probed_often_enough_to_come_back_quickly() -> None:
    """A camera back after an outage gives results within the largest delay plus an open:
    the default cap is 2 s (it was 8 s: results came back 7 s after a 10 s outage)."""
    first, cap = inspect.signature(Stream).parameters["backoff"].default
    assert first <= 0.5 and cap <= 2.0
