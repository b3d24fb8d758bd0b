from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from edgevit import runtime
from edgevit.artifacts import ArtifactInfo
from edgevit.config import ViTConfig
from edgevit.errors import ArtifactError, BackendError, InputError
from edgevit.preprocess import Preprocess
from edgevit.runtime import Model


def test_importing_the_runtime_leaves_torch_out():
    code = (
        "import sys, edgevit, edgevit.runtime, edgevit.runtime.ort_backend, edgevit.validate, edgevit.cli;"
        "edgevit.cli.build_parser();"
        "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_predict_returns_top_k_names_and_probabilities(nano_artifacts, digits):
    with runtime.load(nano_artifacts.int8_onnx) as model:
        pred = model.predict(digits.test.images[:10], top_k=3)
    assert pred.indices.shape == (10, 3) and pred.probs.shape == (10, 3) and pred.logits.shape == (10, 10)
    assert all(len(row) == 3 for row in pred.labels)
    assert pred.labels[0][0] == str(pred.top1[0])
    assert np.all(np.diff(pred.probs, axis=1) <= 0)  # best first
    assert np.all((pred.probs > 0) & (pred.probs <= 1))
    assert (pred.top1 == digits.test.labels[:10]).mean() >= 0.5
    rec = pred.to_records()[0]["top_k"][0]
    assert set(rec) == {"index", "label", "prob"}


def test_batches_split_and_results_do_not_depend_on_batch_size(nano_artifacts, digits):
    images = digits.test.images[:37]
    with runtime.load(nano_artifacts.fp32_onnx, batch_size=8) as model:
        calls = []
        real = model.runner.infer
        model.runner.infer = lambda feed: calls.append(len(next(iter(feed.values())))) or real(feed)
        a = model.logits(images)
        assert calls == [8, 8, 8, 8, 5]
        b = model.logits(images, batch_size=37)
        calls.clear()  # an already preprocessed batch is split the same way
        c = model.infer_chunked(model.preprocess(images))
        assert calls == [8, 8, 8, 8, 5]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_any_image_size_and_float_input(nano_artifacts, digits):
    import cv2

    img = digits.test.images[0]
    big = cv2.resize(img, (64, 64), interpolation=cv2.INTER_NEAREST)
    with runtime.load(nano_artifacts.fp32_onnx) as model:
        p_big = model.predict([big])
        assert p_big.indices.shape[0] == 1
        x = model.preprocess(digits.test.images[:4])
        np.testing.assert_array_equal(model.logits(x), model.logits(digits.test.images[:4]))


def test_bad_inputs_raise_input_errors(nano_artifacts):
    with runtime.load(nano_artifacts.fp32_onnx) as model:
        with pytest.raises(InputError, match="channels"):
            model.predict([np.zeros((8, 8, 3), np.uint8)])
        x = np.zeros((2, 1, 8, 8), np.float32)
        x[0, 0, 0, 0] = np.nan
        with pytest.raises(InputError, match="NaN"):
            model.predict(x)
        with pytest.raises(InputError, match="no images"):
            model.predict([])
        with pytest.raises(InputError, match="batch_size"):
            model.predict(np.zeros((1, 1, 8, 8), np.float32), batch_size=0)


def test_concurrent_predictions_from_two_threads(nano_artifacts, digits):
    images = digits.test.images[:64]
    with runtime.load(nano_artifacts.int8_onnx) as model:
        expected = model.logits(images)
        results, errors = [], []

        def worker():
            try:
                for _ in range(20):
                    results.append(model.logits(images))
            except Exception as exc:  # pragma: no cover - surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(results) == 40
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_loading_errors(tmp_path, nano_artifacts):
    with pytest.raises(ArtifactError, match="does not exist"):
        runtime.load(tmp_path / "missing.onnx")
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="unknown artifact type"):
        runtime.load(weird)
    with pytest.raises(BackendError, match="not available here"):
        runtime.load(nano_artifacts.fp32_onnx, provider="tensorrt")
    with pytest.raises(BackendError, match="unknown backend"):
        runtime.load(nano_artifacts.fp32_onnx, backend="tflite")


class _WrongShapeRunner:
    name, input_name, output_names, max_batch = "fake", "images", ["logits"], 4

    def infer(self, feed):
        return [np.zeros((len(feed["images"]), 3), np.float32)]

    def close(self):
        pass


def test_a_runner_disagreeing_with_the_metadata_is_caught():
    info = ArtifactInfo(ViTConfig(), Preprocess(8, 1, (0.0,), (1.0,)), [str(i) for i in range(10)])
    model = Model(_WrongShapeRunner(), info, batch_size=32)
    assert model.batch_size == 4  # capped by the runner's profile
    with pytest.raises(BackendError, match="metadata does not match"):
        model.predict(np.zeros((2, 1, 8, 8), np.float32))


def test_topk_matches_a_full_sort():
    from edgevit.runtime import topk

    rng = np.random.default_rng(0)
    for classes in (10, 1000):  # one sort per row / argpartition, then a sort of k
        probs = rng.random((50, classes)).astype(np.float32)
        for k in (1, 3, 10, 99, 5000):
            idx, vals = topk(probs, k)
            ref = np.argsort(-probs, axis=1, kind="stable")[:, : min(k, classes)]
            np.testing.assert_array_equal(idx, ref)
            np.testing.assert_array_equal(vals, np.take_along_axis(probs, ref, axis=1))
            assert idx.dtype == np.int64


def test_top_probs_is_softmax_then_topk():
    from edgevit.runtime import softmax, top_probs, topk

    logits = np.random.default_rng(1).normal(0, 5, (40, 1000)).astype(np.float32)
    idx, probs = top_probs(logits, 5)
    ref_idx, ref_probs = topk(softmax(logits.copy()), 5)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-6)
    assert probs.dtype == np.float32 and logits.std() > 4  # the input was not changed
