"""The loop: batching across sources, routing, drops, failures, stalls, stop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from stream_doubles import ScriptedSource, linear_model, to_frames, write_video

from edgevit.errors import BackendError
from edgevit.stream import CaptureError, FrameResult, FrameSource, Stream, StreamEvent


def gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def test_two_sources_are_batched_together_and_results_routed_back(test_digits: tuple[np.ndarray, np.ndarray]) -> None:
    images = test_digits[0]
    a, b = to_frames(images[:40]), to_frames(images[40:80])
    model = linear_model()
    results = list(Stream(model, [FrameSource(a, "a://"), FrameSource(b, "b://")], batch_size=8, max_wait_ms=50))
    batch_sizes = list(model.runner.calls)  # type: ignore[attr-defined]

    by_source = {uri: [r for r in results if r.source == uri] for uri in ("a://", "b://")}
    assert [r.index for r in by_source["a://"]] == list(range(40))  # all, in order, per source
    assert [r.index for r in by_source["b://"]] == list(range(40))
    expected = {"a://": model.predict([gray(f) for f in a]), "b://": model.predict([gray(f) for f in b])}
    for uri, rs in by_source.items():
        assert [r.source_id for r in rs] == [0 if uri == "a://" else 1] * 40
        np.testing.assert_array_equal([r.indices for r in rs], expected[uri].indices)
        np.testing.assert_allclose([r.probs for r in rs], expected[uri].probs, atol=1e-6)
        assert all(r.frame is f for r, f in zip(rs, a if uri == "a://" else b, strict=True))

    # batches really mix the two sources: walk the results batch by batch
    mixed, i = 0, 0
    while i < len(results):
        n = results[i].batch_size
        mixed += len({r.source for r in results[i : i + n]}) == 2
        i += n
    assert mixed >= 5
    assert max(batch_sizes) == 8


def test_two_live_sources_are_both_served() -> None:
    model = linear_model()
    src = ["synthetic://?fps=100&width=64&height=64", "synthetic://?fps=100&width=64&height=48&pattern=bars"]
    with Stream(model, src, batch_size=2, max_wait_ms=20, max_frames=200) as stream:
        results = list(stream)
    counts = [sum(r.source_id == i for r in results) for i in (0, 1)]
    assert sum(counts) == 200 and min(counts) >= 50  # both sources served, neither starved
    assert max(r.batch_size for r in results) <= 2


def results_until(stream: Stream, done: Callable[[list[FrameResult]], bool]) -> list[FrameResult]:
    """Iterate until ``done(results)`` (the stream's duration is the safety net)."""
    results: list[FrameResult] = []
    for r in stream:
        results.append(r)
        if done(results):
            stream.stop()
    return results


def between(results: list[FrameResult], uri: str, first: FrameResult, last: FrameResult) -> list[FrameResult]:
    """Results of ``uri`` that came out after ``first`` and before ``last``."""
    i, j = results.index(first), results.index(last)
    return [r for r in results[i + 1 : j] if r.source == uri]


def test_failing_source_is_reopened_while_the_other_goes_on(test_digits: tuple[np.ndarray, np.ndarray]) -> None:
    frames = to_frames(test_digits[0][:20])
    flaky = ScriptedSource("flaky://", frames, fps=100, fail_at=10)
    steady = ScriptedSource("steady://", frames, fps=100)
    events: list[StreamEvent] = []
    with Stream(linear_model(), [flaky, steady], duration=30, backoff=(0.2, 1.0), on_event=events.append) as s:
        results = results_until(s, lambda rs: any(r.source == "flaky://" and r.index >= 15 for r in rs))

    kinds = [(e.source, e.kind) for e in events]
    assert ("flaky://", "failed") in kinds and ("flaky://", "reopened") in kinds
    assert kinds.index(("flaky://", "failed")) < kinds.index(("flaky://", "reopened"))
    assert any("injected capture failure" in e.message for e in events)
    st = {x.uri: x for x in s.stats.sources}
    assert st["flaky://"].failures == 1 and st["flaky://"].reopens == 1 and flaky.opens == 2
    assert st["flaky://"].last_error == "" and st["flaky://"].state == "running"  # the outage is over
    # the steady source kept delivering while the flaky one was down
    before = next(r for r in results if r.source == "flaky://" and r.index == 9)
    after = next(r for r in results if r.source == "flaky://" and r.index == 10)
    assert between(results, "steady://", before, after)
    assert st["steady://"].failures == 0


def test_a_source_that_cannot_be_opened_at_first_is_retried_while_the_other_runs(
    test_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """Issue #17.1: a first open that fails is retried like a later failure."""
    frames = to_frames(test_digits[0][:20])
    late = ScriptedSource("late://", frames, fps=100, fail_opens=3)
    steady = ScriptedSource("steady://", frames, fps=100)
    events: list[StreamEvent] = []
    with Stream(linear_model(), [late, steady], duration=30, backoff=(0.05, 0.1), on_event=events.append) as s:
        results = results_until(s, lambda rs: any(r.source == "late://" for r in rs))
    st = {x.uri: x for x in s.stats.sources}
    assert late.opens == 4 and st["late://"].failures == 3 and st["late://"].reopens == 1  # every attempt counted
    assert [e.kind for e in events if e.source == "late://"] == ["failed", "failed", "failed", "reopened"]
    assert st["late://"].last_error == ""
    assert results[0].source == "steady://"  # the healthy source did not wait for the other


def test_an_open_that_hangs_is_abandoned_and_blocks_nothing(test_digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Issue #17.3: opens run on the capture threads and are supervised like reads."""
    frames = to_frames(test_digits[0][:20])
    hung = ScriptedSource("hung://", frames, fps=100, hang_open=True)
    steady = ScriptedSource("steady://", frames, fps=100)
    try:
        with Stream(linear_model(), [hung, steady], duration=60, stall_timeout=0.5, backoff=(0.05, 0.1)) as s:
            results = results_until(s, lambda rs: any(r.source == "hung://" for r in rs))
    finally:
        hung.open_release.set()
    st = {x.uri: x for x in s.stats.sources}
    assert st["hung://"].stalls == 1 and st["hung://"].reopens == 1 and hung.opens == 2
    assert any(e.kind == "stalled" and "open did not return" in e.message for e in s.events)
    first_hung = next(r for r in results if r.source == "hung://")
    assert between(results, "steady://", results[0], first_hung)  # steady ran all along


def test_stalled_source_is_reported_and_reopened(test_digits: tuple[np.ndarray, np.ndarray]) -> None:
    frames = to_frames(test_digits[0][:20])
    stalling = ScriptedSource("stall://", frames, fps=100, stall_at=5)
    steady = ScriptedSource("steady://", frames, fps=100)
    try:
        with Stream(linear_model(), [stalling, steady], duration=30, stall_timeout=0.3, backoff=(0.05, 0.5)) as s:
            results = results_until(s, lambda rs: sum(r.source == "stall://" for r in rs) > 20)
    finally:
        stalling.release.set()  # let the abandoned reader return
    st = {x.uri: x for x in s.stats.sources}
    assert st["stall://"].stalls == 1 and st["stall://"].reopens == 1 and stalling.opens == 2
    assert [e.kind for e in s.events if e.source == "stall://"][:2] == ["stalled", "reopened"]
    stalled = [r for r in results if r.source == "stall://"]
    assert between(results, "steady://", stalled[4], stalled[5])  # steady went on during the stall


def test_no_frame_from_any_source_is_a_capture_error_after_the_open_limit(tmp_path: Path) -> None:
    """Issue #17.1: every source unopenable still ends, with an error naming them."""
    never = ScriptedSource("never://", [np.zeros((8, 8, 3), np.uint8)], fail_opens=10**6)
    out = tmp_path / "r.jsonl"
    out.write_text("kept\n")
    with pytest.raises(CaptureError, match=r"never://: injected open failure"):
        list(Stream(linear_model(), [never], [f"jsonl://{out}"], stall_timeout=0.1, backoff=(0.05, 0.1)))
    assert never.opens >= 2  # retried until the open limit
    assert out.read_text() == "kept\n"  # an existing output is left as it was
    assert not list(tmp_path.glob(".*partial*"))


def test_file_source_that_raises_ends_and_the_loop_goes_on(test_digits: tuple[np.ndarray, np.ndarray]) -> None:
    frames = to_frames(test_digits[0][:30])

    def broken():  # a file whose decoder dies at frame 12
        for i, f in enumerate(frames):
            if i == 12:
                raise OSError("decoder error")
            yield f

    with Stream(linear_model(), [FrameSource(broken(), "broken://"), FrameSource(frames, "ok://")]) as s:
        results = list(s)
    assert [r.index for r in results if r.source == "broken://"] == list(range(12))
    assert [r.index for r in results if r.source == "ok://"] == list(range(30))
    st = s.stats.sources[0]
    assert st.state == "failed" and st.failures == 1 and "decoder error" in st.last_error


def test_corrupt_frames_and_failed_inference_are_counted_and_skipped(tmp_path: Path) -> None:
    good = np.full((16, 16, 3), 100, np.uint8)
    poison = np.full((16, 16, 3), 255, np.uint8)  # the test model fails on any batch containing it
    frames = [good, np.zeros((16, 16, 3), np.float32), good, np.zeros((0, 5), np.uint8), poison, good, good]
    model = linear_model(fail=lambda x: bool(x.max() > 1.9))  # normalized 255 is 2.0
    with Stream(model, [FrameSource(frames, "f://")], batch_size=4, max_wait_ms=100) as s:
        results = list(s)
    assert [r.index for r in results] == [0, 2, 5, 6]
    st = s.stats.sources[0]
    assert st.corrupt == 2 and st.errors == 1 and st.results == 4
    assert {e.kind for e in s.events} >= {"corrupt", "error", "ended"}

    folder = tmp_path / "imgs"
    folder.mkdir()
    import cv2

    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), good)
    (folder / "1.png").write_bytes(b"not a png")
    with Stream(linear_model(), [str(folder)]) as s:
        assert [r.index for r in s] == [0, 2]
    assert s.stats.sources[0].corrupt == 1


def test_a_model_that_always_fails_stops_the_loop_with_backend_error() -> None:
    model = linear_model(fail=lambda x: True)
    with pytest.raises(BackendError, match="in a row"), Stream(model, ["synthetic://?fps=0&width=32&height=32"]) as s:
        list(s)


def test_slow_model_live_source_drops_stale_frames() -> None:
    model = linear_model(delay=0.05)  # 20 batches/s at most, against a 100 fps camera
    with Stream(model, ["synthetic://?fps=100&width=64&height=64"], max_frames=20) as s:
        results = list(s)
    st = s.stats.sources[0]
    assert st.dropped > 0  # stale frames were dropped, and counted
    assert st.captured - st.results - st.dropped <= 2  # at most the frame in the queue / in flight
    idx = [r.index for r in results]
    assert idx == sorted(idx) and idx[-1] - idx[0] > len(idx)  # always the newest frame: gaps


def test_slow_model_file_source_drops_nothing(tmp_path: Path, test_digits: tuple[np.ndarray, np.ndarray]) -> None:
    video = write_video(tmp_path / "v.mp4", to_frames(test_digits[0][:40]))
    model = linear_model(delay=0.02)
    with Stream(model, [str(video)], batch_size=1) as s:
        results = list(s)
    assert [r.index for r in results] == list(range(40))
    assert s.stats.sources[0].dropped == 0 and s.stats.sources[0].total == 40


def test_stop_from_another_thread_ends_the_stream_and_closes_sinks(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    stream = Stream(linear_model(), ["synthetic://?fps=30&width=64&height=64"], [f"jsonl://{out}"])
    seen: list[FrameResult] = []

    def on_result(r: FrameResult) -> None:
        seen.append(r)
        if len(seen) == 5:
            threading.Thread(target=stream.stop).start()

    stats = stream.run(on_result)
    assert stats.stopped_by == "stop" and len(seen) >= 5
    assert len(out.read_text().splitlines()) == len(seen)
