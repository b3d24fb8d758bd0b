"""Latency histograms and the inbox the capture threads and the batcher share."""

from __future__ import annotations

import time

import numpy as np

from edgevit.stream.loop import _Inbox, _Item
from edgevit.stream.stats import LatencyHistogram, SourceStats, StreamStats


def test_histogram_percentiles_are_within_one_bin_of_the_exact_ones() -> None:
    rng = np.random.default_rng(0)
    values = rng.lognormal(mean=1.0, sigma=1.0, size=5000)
    h = LatencyHistogram()
    for v in values:
        h.add(float(v))
    for q in (50, 90, 99):
        exact = float(np.percentile(values, q, method="inverted_cdf"))
        assert exact <= h.percentile(q) <= exact * LatencyHistogram.RATIO * 1.0001
    assert h.count == 5000 and np.isclose(h.mean, values.mean()) and h.max == values.max()


def test_stream_latency_merges_every_source() -> None:
    stats = StreamStats()
    for sid, values in enumerate(([1.0, 2.0, 3.0], [10.0, 20.0])):
        st = SourceStats(sid, f"s{sid}://", live=False)
        for v in values:
            st.record(v, time.monotonic())
        stats.sources.append(st)
    merged = stats.latency
    assert merged.count == 5 and merged.max == 20.0 and np.isclose(merged.total, 36.0)
    assert merged.percentile(50) <= 3.0 * LatencyHistogram.RATIO
    assert stats.summary()["latency_ms"]["max"] == 20.0


def _items(sid: int, n: int) -> list[_Item]:
    return [_Item(sid, i, 0.0, time.monotonic(), None, None) for i in range(n)]


def test_file_sources_share_a_batch_and_the_wait_is_bounded() -> None:
    inbox = _Inbox()
    a, b = inbox.add(16, live=False), inbox.add(16, live=False)
    inbox.put(_items(a, 8))
    inbox.put(_items(b, 8))
    batch = inbox.take(8, 0.05)
    assert [it.sid for it in batch].count(a) == 4 and [it.sid for it in batch].count(b) == 4

    # b has nothing queued (but has not ended): a gets its share, the batcher waits for b
    # until max_wait, then fills the batch from a
    inbox.take(8, 0.0)  # empty b
    inbox.put(_items(a, 8))
    t0 = time.monotonic()
    batch = inbox.take(8, 0.05)
    assert time.monotonic() - t0 >= 0.045 and [it.sid for it in batch] == [a] * 8

    # once b has ended it no longer counts: no wait
    inbox.finish(b)
    inbox.put(_items(a, 8))
    t0 = time.monotonic()
    assert len(inbox.take(8, 0.5)) == 8 and time.monotonic() - t0 < 0.25


def test_a_live_source_keeps_only_the_newest_frames() -> None:
    inbox = _Inbox()
    cam = inbox.add(1, live=True)
    assert inbox.put(_items(cam, 1)) == 0
    assert inbox.put([_Item(cam, 7, 0.0, time.monotonic(), None, None)]) == 1  # the stale one is dropped
    assert [it.index for it in inbox.take(4, 0.0)] == [7]
