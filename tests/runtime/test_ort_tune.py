"""The CPU rewrites of ONNX Runtime's optimized INT8 graph: they apply to every linear
layer, GELU and the patch embedding of a ViT, keep every quantizer, and leave the
outputs as they were (bit-identical for the bias and GELU folds)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edgevit import runtime
from edgevit.runtime import ort_tune
from edgevit.runtime.base import Model
from edgevit.runtime.ort_backend import OnnxRuntimeRunner


def _ops(proto) -> Counter:
    return Counter(n.op_type for n in proto.graph.node)


@pytest.fixture(scope="module")
def images(digits) -> np.ndarray:
    return digits.test.images


def _logits(runner: OnnxRuntimeRunner, info, images: np.ndarray) -> np.ndarray:
    return Model(runner, info).logits(images)


def test_every_block_is_rewritten_and_no_quantizer_is_lost(nano_artifacts):
    with runtime.load(nano_artifacts.int8_onnx) as model:
        depth = model.info.model_config.depth
    before = ort_tune.ort_optimized(nano_artifacts.int8_onnx)
    after = ort_tune.ort_optimized(nano_artifacts.int8_onnx)
    tuning = ort_tune.rewrite(after)
    # qkv, proj and fc2 biases fold into their integer GEMMs; fc1's bias leaves BiasGelu
    assert (tuning.bias_folds, tuning.gelus, tuning.patch_convs) == (3 * depth, depth, 1)
    a, b = _ops(before), _ops(after)
    assert b["BiasGelu"] == 0 and b["Gelu"] == depth and b["Conv"] == 0
    assert b["Add"] == a["Add"] - 3 * depth
    assert b["MatMulIntegerToFloat"] == a["MatMulIntegerToFloat"] + 1  # the patch embedding
    assert b["QuantizeLinear"] == a["QuantizeLinear"]  # every activation quantizer is kept
    # the patch embedding's float dequantization of the image is gone, nothing else
    assert b["DequantizeLinear"] == a["DequantizeLinear"] - 2
    assert f"{3 * depth} biases into integer GEMMs" in str(tuning)


def test_bias_and_gelu_folds_are_bit_identical(nano_artifacts, images, monkeypatch):
    plain = OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, tune=False)
    monkeypatch.setattr(ort_tune, "_patch_convs", lambda *a, **k: None)
    folded = OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1)
    assert "0 patch" in folded.tuning and "BiasGelu -> Gelu" in folded.tuning
    info = runtime.load(nano_artifacts.int8_onnx).info
    np.testing.assert_array_equal(_logits(folded, info, images), _logits(plain, info, images))


def test_all_rewrites_keep_the_predictions(nano_artifacts, images):
    plain = OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, tune=False)
    tuned = OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1)
    assert tuned.tuning.startswith("CPU rewrites") and plain.tuning == "off"
    info = runtime.load(nano_artifacts.int8_onnx).info
    a, b = _logits(tuned, info, images), _logits(plain, info, images)
    np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
    # integer patch embedding = the float one up to the order of the sums; a value on a
    # rounding boundary of the next quantizer may land one step away in a few images
    same = np.abs(a - b).max(axis=1) <= 1e-5
    assert same.mean() >= 0.97
    assert np.abs(a - b).max() <= 0.02 * np.abs(b).max()


def test_fp32_models_are_left_alone(nano_artifacts):
    with OnnxRuntimeRunner(nano_artifacts.fp32_onnx, threads=1) as runner:
        assert runner.tuning == "no CPU rewrites apply"
        assert isinstance(runner._model, str)


def test_a_failed_rewrite_runs_the_untouched_graph(nano_artifacts, images, monkeypatch):
    def broken(path):
        raise RuntimeError("unexpected graph\nsecond line")

    monkeypatch.setattr(ort_tune, "tune_for_cpu", broken)
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1) as runner:
        assert runner.tuning == "not applied (unexpected graph)"
        info = runtime.load(nano_artifacts.int8_onnx).info
        assert _logits(runner, info, images[:4]).shape == (4, len(info.class_names))
