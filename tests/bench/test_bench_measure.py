"""Timing primitives: statistics, the CUDA-event timer TensorRT engines are timed with (on a
double of cuda-python, since this machine has no GPU), and memory sampling."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgevit.bench.measure import CudaEventTimer, WallTimer, peak_rss_mb, rss_mb, summarize, timer_for


def test_summarize_pools_calls_and_takes_the_median_round():
    st = summarize([[10.0, 10.0], [20.0, 20.0], [5.0, 5.0]], batch=4)
    # per round: 4 images x 2 calls / summed seconds
    assert st.throughput_rounds == pytest.approx([400.0, 200.0, 800.0])
    assert st.throughput == pytest.approx(400.0)
    assert st.calls == 6
    assert st.p50_ms == pytest.approx(10.0)
    assert st.p50_ms <= st.p90_ms <= st.p99_ms <= 20.0
    assert st.to_dict()["latency_ms"]["p99"] == pytest.approx(st.p99_ms, abs=1e-4)
    with pytest.raises(ValueError):
        summarize([[]], batch=1)


class FakeCudart:
    """Records the CUDA calls; every event pair is 2.5 ms apart."""

    def __init__(self):
        self.calls: list[tuple] = []

    def cudaEventCreate(self):
        self.calls.append(("create",))
        return (0, object())

    def cudaEventRecord(self, event, stream):
        self.calls.append(("record", stream))
        return (0,)

    def cudaEventSynchronize(self, event):
        self.calls.append(("sync",))
        return (0,)

    def cudaEventElapsedTime(self, start, end):
        return (0, 2.5)

    def cudaEventDestroy(self, event):
        self.calls.append(("destroy",))
        return (0,)


def test_engines_are_timed_with_cuda_events_on_the_runner_stream():
    cudart = FakeCudart()
    runner = SimpleNamespace(cudart=cudart, _stream="stream-7")
    timer = timer_for(runner)
    assert isinstance(timer, CudaEventTimer) and timer.method == "cuda_events"
    ran = []
    assert timer.time(lambda: ran.append(1)) == 2.5
    assert ran == [1]
    records = [c for c in cudart.calls if c[0] == "record"]
    assert records == [("record", "stream-7"), ("record", "stream-7")]
    assert ("sync",) in cudart.calls
    timer.close()
    assert cudart.calls.count(("destroy",)) == 2


def test_cpu_runners_use_the_wall_clock():
    assert isinstance(timer_for(SimpleNamespace(name="onnxruntime")), WallTimer)
    assert WallTimer().time(lambda: None) >= 0.0


def test_memory_sampling_reports_megabytes():
    assert 1.0 < rss_mb() <= peak_rss_mb() + 1.0
