"""The timing loop as pure code: fake targets and a fake timer, so the order of calls and the
stopping rule are checked without the wall clock."""

from __future__ import annotations

import numpy as np

from edgevit.bench.targets import Target
from edgevit.bench.timing import PREPROCESS_REFERENCE, Case, make_cases, preprocess_specs, run_case, time_cases
from edgevit.preprocess import Preprocess


class FixedTimer:
    """Says every call took ``ms`` milliseconds (and makes the call)."""

    method = "fixed"

    def __init__(self, ms: float):
        self.ms = ms

    def time(self, fn) -> float:
        fn()
        return self.ms


def fake_target(name: str, calls: list[str], ms: float = 10.0, max_batch: int | None = None) -> Target:
    pre = Preprocess(8, 1, (0.5,), (0.25,))
    return Target(
        id=name,
        group="g",
        kind=name,
        label=name,
        backend="fake",
        precision="fp32",
        artifact=None,
        infer=lambda x: calls.append(f"{name}:{len(x)}"),
        close=lambda: None,
        preprocess=pre,
        timer=FixedTimer(ms),
        max_batch=max_batch,
    )


def test_a_round_runs_min_calls_and_at_least_min_time() -> None:
    calls: list[str] = []
    case = Case(fake_target("a", calls, ms=10.0), 2, np.zeros((2, 1, 8, 8), np.float32))
    assert run_case(case, min_time=0.0, min_calls=3) == [10.0] * 3
    assert run_case(case, min_time=0.05, min_calls=1) == [10.0] * 5  # 5 x 10 ms reach 50 ms
    assert calls == ["a:2"] * 8


def test_rounds_are_interleaved_and_start_at_different_cases() -> None:
    calls: list[str] = []
    targets = [fake_target(n, calls) for n in ("a", "b", "c")]
    cases = make_cases(targets, [1])
    loads = time_cases(cases, rounds=3, min_time=0.0, min_calls=1, warmup=2)
    assert calls[:6] == ["a:1", "a:1", "b:1", "b:1", "c:1", "c:1"]  # warm-up, untimed
    rounds = [calls[6 + 3 * r : 9 + 3 * r] for r in range(3)]
    assert rounds == [["a:1", "b:1", "c:1"], ["b:1", "c:1", "a:1"], ["c:1", "a:1", "b:1"]]
    assert all(c.rounds_ms == [[10.0]] * 3 for c in cases)
    assert len(loads) == 3 and all(len(v) == 3 for v in loads)


def test_cases_share_one_input_per_group_and_respect_a_profile_limit() -> None:
    calls: list[str] = []
    a, b = fake_target("a", calls), fake_target("b", calls, max_batch=4)
    cases = make_cases([a, b], [1, 8])
    assert [(c.target.id, c.batch) for c in cases] == [("a", 1), ("a", 8), ("b", 1)]
    assert cases[0].x is cases[2].x and cases[1].x.shape == (8, 1, 8, 8)


def test_preprocessing_is_timed_at_the_models_and_the_reference_shapes() -> None:
    specs = preprocess_specs([fake_target("a", [])])
    assert specs[:2] == [(8, 1, (8, 8)), (8, 1, (480, 640))]
    assert [(s, c) for s, c, _ in specs[2:]] == list(PREPROCESS_REFERENCE)
