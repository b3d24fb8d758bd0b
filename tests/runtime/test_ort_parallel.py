"""The ONNX Runtime runner's two ways of using the CPU threads give the same numbers:
a batch cut into slices that run side by side equals one run of the whole batch."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgevit import runtime
from edgevit.errors import BackendError
from edgevit.runtime.ort_backend import TIMING_MAX_IMAGES, TIMING_RUNS, OnnxRuntimeRunner, bucket


@pytest.fixture(scope="module")
def batch(nano_artifacts, digits) -> np.ndarray:
    with runtime.load(nano_artifacts.int8_onnx) as model:
        return model.preprocess(digits.test.images[:13])


@pytest.mark.parametrize("artifact", ["int8_onnx", "fp32_onnx"])
def test_batch_slices_equal_one_run(nano_artifacts, batch, artifact):
    path = getattr(nano_artifacts, artifact)
    with (
        OnnxRuntimeRunner(path, threads=1, parallel="ops") as one,
        OnnxRuntimeRunner(path, threads=3, parallel="batch") as sliced,
    ):
        assert one.parallel == "ops" and sliced.parallel == "batch"
        ref = one.infer({one.input_name: batch})[0]
        # 13 images over 3 threads: slices of 4, 4 and 5, joined back in order
        out = sliced.infer({sliced.input_name: batch})[0]
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
        # fewer images than threads: one slice per image
        np.testing.assert_allclose(sliced.infer({sliced.input_name: batch[:2]})[0], ref[:2], rtol=1e-5, atol=1e-5)


def test_buckets_group_batch_sizes():
    sizes = (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 1000)
    assert [bucket(n) for n in sizes] == [1, 2, 4, 4, 8, 8, 16, 16, 32, 32, 32, 32]


def test_auto_times_each_bucket_once_in_every_mode_and_keeps_the_fastest(nano_artifacts, batch):
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=2) as runner:
        assert runner.parallel == "auto" and runner.modes == {}
        runs: list[tuple[str, int]] = []
        real_run = runner._run

        def spy(mode, feed, n):
            runs.append((mode, n))
            return real_run(mode, feed, n)

        runner._run = spy  # type: ignore[method-assign]
        ref = OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, parallel="ops")
        out = runner.infer({runner.input_name: batch[:8]})[0]
        np.testing.assert_allclose(out, ref.infer({ref.input_name: batch[:8]})[0], rtol=1e-5, atol=1e-5)
        # the first call of the 5-8 bucket: every mode warmed up and timed, then the call itself
        timed = runs[:-1]
        assert {m for m, _ in timed} == {"single", "ops", "batch"}
        assert all(n == 8 for _, n in runs)
        assert 2 <= sum(m == "batch" for m, _ in timed) <= 1 + TIMING_RUNS
        assert set(runner.modes) == {8} and runs[-1] == (runner.modes[8], 8)

        runs.clear()  # the same bucket again (6 images): no timing, the kept mode only
        runner.infer({runner.input_name: batch[:6]})
        assert runs == [(runner.modes[8], 6)]

        runs.clear()  # a single image is its own bucket: batch slicing is not a candidate
        one = runner.infer({runner.input_name: batch[:1]})[0]
        np.testing.assert_allclose(one, out[:1], rtol=1e-5, atol=1e-5)
        assert {m for m, _ in runs[:-1]} == {"single", "ops"} and runner.modes[1] in ("single", "ops")
        assert runner.describe_modes().startswith("parallel=auto (1: ")
        ref.close()


def test_large_calls_are_timed_on_a_sample(nano_artifacts, batch):
    big = np.concatenate([batch] * 4)  # 52 images: bucket 32, timed on the first 32
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=2) as runner:
        sizes: list[int] = []
        real_run = runner._run

        def spy(mode, feed, n):
            sizes.append(n)
            return real_run(mode, feed, n)

        runner._run = spy  # type: ignore[method-assign]
        out = runner.infer({runner.input_name: big})[0]
        assert out.shape[0] == 52 and set(sizes[:-1]) == {TIMING_MAX_IMAGES} and sizes[-1] == 52
        assert list(runner.modes) == [32]


def test_concurrent_first_calls_decide_once(nano_artifacts, batch):
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=2) as runner:
        outs: list[np.ndarray] = []
        threads = [
            threading.Thread(target=lambda: outs.append(runner.infer({runner.input_name: batch[:8]})[0]))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(outs) == 4 and list(runner.modes) == [8]
        for o in outs[1:]:
            np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-5)


def test_fixed_modes_skip_the_timing(nano_artifacts, batch):
    for mode in ("batch", "ops"):
        with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=2, parallel=mode) as runner:
            runner.infer({runner.input_name: batch[:8]})
            runner.infer({runner.input_name: batch[:1]})
            assert runner.modes == {} and runner.describe_modes() == f"parallel={mode}"


def test_one_thread_never_slices(nano_artifacts):
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1) as runner:
        assert runner.parallel == "ops"


def test_concurrent_calls_on_a_sliced_runner(nano_artifacts, batch):
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=2, parallel="batch") as runner:
        ref = runner.infer({runner.input_name: batch})[0]
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(10):
                    np.testing.assert_allclose(runner.infer({runner.input_name: batch})[0], ref, rtol=1e-6, atol=1e-6)
            except BaseException as exc:  # collected, asserted empty below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors


def test_bad_settings_are_backend_errors(nano_artifacts):
    with pytest.raises(BackendError, match="parallel mode"):
        OnnxRuntimeRunner(nano_artifacts.int8_onnx, parallel="streams")
    with pytest.raises(BackendError, match="threads must be at least 1"):
        OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=0)
    with pytest.raises(BackendError, match="ONNX Runtime setting"):
        runtime.load(nano_artifacts.int8_onnx, backend="openvino", parallel="batch")
    with runtime.load(nano_artifacts.int8_onnx, parallel="ops", threads=2) as model:
        assert model.runner.parallel == "ops"
