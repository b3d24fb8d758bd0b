"""Latency histograms and the stream's counters."""

from __future__ import annotations

import time

import numpy as np

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
