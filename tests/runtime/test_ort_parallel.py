"""The ONNX Runtime runner's two ways of using the CPU threads give the same numbers:
a batch cut into slices that run side by side equals one run of the whole batch."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgevit import runtime
from edgevit.errors import BackendError
from edgevit.runtime.ort_backend import OnnxRuntimeRunner


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


def test_auto_slices_batches_and_times_single_images_both_ways(nano_artifacts, batch):
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=2) as runner:
        assert runner.parallel == "auto" and runner.small_batches == "undecided"
        calls: list[int] = []
        real_run = runner._batch_session.run

        def counting_run(names, feed):
            calls.append(len(feed[runner.input_name]))
            return real_run(names, feed)

        runner._batch_session = type("Spy", (), {"run": staticmethod(counting_run)})()
        out = runner.infer({runner.input_name: batch[:8]})[0]
        assert sorted(calls) == [4, 4] and out.shape[0] == 8
        assert runner._ops_session is None  # built only for the first single image
        single = runner.infer({runner.input_name: batch[:1]})[0]
        np.testing.assert_allclose(single, out[:1], rtol=1e-5, atol=1e-5)
        # the first single image was timed on one thread (warm-up + 3 runs) and on all threads
        assert runner.small_batches in ("ops", "batch")
        calls.clear()
        runner.infer({runner.input_name: batch[:1]})
        if runner.small_batches == "batch":
            assert calls == [1] and runner._ops_session is None  # the losing session is freed
        else:
            assert calls == [] and runner._ops_session is not None


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
