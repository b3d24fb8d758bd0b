"""The micro-batcher as pure code: batches, fairness and waits decided on a given clock
(no threads, no sleeps), and the inbox around it on an injected clock."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from edgevit.stream.batcher import Batcher
from edgevit.stream.inbox import Inbox


@dataclass
class Item:
    sid: int
    index: int


def items(sid: int, n: int, start: int = 0) -> list[Item]:
    return [Item(sid, start + i) for i in range(n)]


def sids(batch: list[Item] | None) -> list[int]:
    assert batch is not None
    return [it.sid for it in batch]


def test_file_sources_share_a_batch_and_the_wait_is_bounded() -> None:
    b = Batcher(max_n=8, max_wait_s=0.05)
    f0, f1 = b.add(16, live=False), b.add(16, live=False)
    b.put(f0, items(f0, 8), now=0.0)
    b.put(f1, items(f1, 8), now=0.0)
    batch, wake = b.poll(0.0)
    assert wake is None and sids(batch).count(f0) == 4 and sids(batch).count(f1) == 4

    # f1 has nothing queued but has not ended: f0 gives its share, then the batcher waits
    # for f1 until max_wait after the batch started, then fills the batch from f0
    b.poll(0.0)  # drains f1's last 4 (and 4 of f0)
    b.put(f0, items(f0, 8, 100), now=1.0)
    assert b.poll(1.0) == (None, 1.05)
    assert b.poll(1.03) == (None, 1.05)
    batch, _ = b.poll(1.05)
    assert sids(batch) == [f0] * 8

    # once f1 has ended it no longer counts: no wait at all
    b.finish(f1)
    b.put(f0, items(f0, 8, 200), now=2.0)
    batch, wake = b.poll(2.0)
    assert len(batch or []) == 8 and wake is None


def test_a_live_source_keeps_only_the_newest_frames() -> None:
    b = Batcher(max_n=4, max_wait_s=0.0)
    cam = b.add(1, live=True)
    assert b.put(cam, items(cam, 1), now=0.0) == 0
    assert b.put(cam, [Item(cam, 7)], now=0.01) == 1  # the stale one is dropped and counted
    batch, _ = b.poll(0.02)
    assert [it.index for it in batch or []] == [7]


def feed(b: Batcher, frames: list[tuple[int, float]]) -> None:
    """Queue (sid, time) frames in time order; each batch is taken as soon as it is ready."""
    for i, (sid, t) in enumerate(sorted(frames, key=lambda f: f[1])):
        b.put(sid, [Item(sid, i)], now=t)
        batch, wake = b.poll(t)
        if batch is None and wake is not None:
            b.poll(wake)


def test_unsynchronized_live_sources_do_not_wait_for_frames_that_are_not_coming() -> None:
    """Issue #17.5: two cameras at 15 fps, 30 ms apart, max_wait 5 ms: the other camera's
    next frame is never due within 5 ms, so no batch waits."""
    b = Batcher(max_n=2, max_wait_s=0.005)
    a, c = b.add(1, live=True), b.add(1, live=True)
    period = 1 / 15
    waits = []
    for k in range(30):
        for sid, offset in ((a, 0.0), (c, 0.030)):
            t = k * period + offset
            b.put(sid, [Item(sid, k)], now=t)
            batch, wake = b.poll(t)
            waits.append(wake)
            if batch is None:  # it would wait: let the clock run to the deadline
                batch, _ = b.poll(wake or t)
            assert batch is not None and len(batch) == 1
    assert waits[6:] == [None] * (len(waits) - 6)  # once the rates are known: never
    assert b.vain_waits <= 2


def test_live_sources_wait_for_a_frame_that_is_due_and_batch_it() -> None:
    """A second camera whose frame is due within max_wait is waited for, and batched."""
    b = Batcher(max_n=2, max_wait_s=0.010)
    a, c = b.add(1, live=True), b.add(1, live=True)
    period = 0.040
    for k in range(4):  # learn both rates: c runs 3 ms behind a
        for sid, offset in ((a, 0.0), (c, 0.003)):
            b.put(sid, [Item(sid, k)], now=k * period + offset)
            batch, wake = b.poll(k * period + offset)
            if batch is None:
                b.poll(wake or 0.0)
    t = 4 * period
    b.put(a, [Item(a, 4)], now=t)
    batch, wake = b.poll(t)
    assert batch is None and wake is not None and t < wake <= t + 0.010  # c is due at t + 3 ms
    b.put(c, [Item(c, 4)], now=t + 0.003)
    batch, wake = b.poll(t + 0.003)
    assert sorted(sids(batch)) == [a, c] and wake is None  # full: handed over at once


def test_a_live_source_that_is_down_is_not_waited_for() -> None:
    b = Batcher(max_n=2, max_wait_s=0.050)
    a, c = b.add(1, live=True), b.add(1, live=True)
    # c: 30 fps, then silent (its camera failed); a: 30 fps
    feed(b, [(c, 0.0), (c, 0.033), (c, 0.066), (a, 0.010), (a, 0.043), (a, 0.076)])
    t = 1.0  # c's next frame was due long ago
    b.put(a, [Item(a, 9)], now=t)
    batch, wake = b.poll(t)
    assert sids(batch) == [a] and wake is None


def test_a_late_frame_ends_the_wait_after_a_quarter_interval() -> None:
    b = Batcher(max_n=2, max_wait_s=0.050)
    a, c = b.add(1, live=True), b.add(1, live=True)
    feed(b, [(c, 0.0), (c, 0.1), (c, 0.2), (a, 0.05), (a, 0.15), (a, 0.25)])  # 10 fps: c due at 0.3
    vain_before = b.vain_waits
    b.put(a, [Item(a, 3)], now=0.29)
    batch, wake = b.poll(0.29)
    assert batch is None and wake == pytest.approx(0.325)  # due at 0.30, plus a quarter interval
    batch, wake = b.poll(0.33)  # nothing came: hand over the one frame, before the 0.34 deadline
    assert sids(batch) == [a] and b.vain_waits - vain_before == 1


def test_mixed_sources_round_robin_and_exhaustion() -> None:
    b = Batcher(max_n=3, max_wait_s=0.0)
    f, cam = b.add(16, live=False), b.add(1, live=True)
    b.put(f, items(f, 5), now=0.0)
    b.put(cam, items(cam, 1), now=0.0)
    batch, _ = b.poll(0.0)
    assert sorted(sids(batch)) == [f, f, cam]
    b.finish(cam)
    b.finish(f)
    assert not b.exhausted  # 3 frames of f are still queued
    batch, _ = b.poll(0.0)
    assert sids(batch) == [f, f, f] and b.exhausted
    assert b.poll(0.0) == (None, None)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_inbox_take_returns_empty_when_idle_and_batches_when_fed() -> None:
    clock = FakeClock()
    inbox = Inbox(Batcher(max_n=4, max_wait_s=0.0), clock=clock)
    cam = inbox.add(1, live=True)
    assert inbox.take(0.0) == []  # nothing queued, no time to wait
    assert inbox.put(cam, [Item(cam, 0)]) == 0
    assert [it.index for it in inbox.take(0.0)] == [0]
    inbox.finish(cam)
    assert inbox.exhausted() and inbox.take(1.0) == []


def test_inbox_file_producer_waits_for_room_and_close_releases_it() -> None:
    inbox = Inbox(Batcher(max_n=2, max_wait_s=0.0))
    f = inbox.add(2, live=False)
    inbox.put(f, items(f, 2))  # full now
    done = threading.Event()

    def producer() -> None:
        inbox.put(f, items(f, 2, 2))  # blocks until the consumer makes room
        done.set()

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    assert [it.index for it in inbox.take(1.0)] == [0, 1]
    assert done.wait(10)
    assert [it.index for it in inbox.take(1.0)] == [2, 3]
    inbox.put(f, items(f, 2, 4))
    blocked = threading.Thread(target=inbox.put, args=(f, items(f, 1, 6)), daemon=True)
    blocked.start()
    inbox.close()  # a producer blocked on a full queue returns
    blocked.join(10)
    assert not blocked.is_alive()
