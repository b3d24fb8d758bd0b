"""The CPU rewrites of ONNX Runtime's optimized INT8 graph (with its integer kernels, which
these tests ask for: on CPUs without VNNI the runner computes INT8 exactly instead): they apply to every linear
layer and the patch embedding of a ViT, keep every quantizer, keep the outputs (checked at
load, on the input's whole quantized range), and stay away from ONNX Runtime versions they
were not tested with."""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgevit import runtime
from edgevit.runtime import ort_rewrite
from edgevit.runtime.base import Model
from edgevit.runtime.ort_backend import OnnxRuntimeRunner


def _ops(proto) -> Counter:
    return Counter(n.op_type for n in proto.graph.node)


def _logits(runner: OnnxRuntimeRunner, info, images: np.ndarray) -> np.ndarray:
    return Model(runner, info).logits(images)


def test_every_block_is_rewritten_and_no_quantizer_is_lost(nano_artifacts):
    with runtime.load(nano_artifacts.int8_onnx) as model:
        depth = model.info.model_config.depth
    before = ort_rewrite.ort_optimized(nano_artifacts.int8_onnx)
    after = ort_rewrite.ort_optimized(nano_artifacts.int8_onnx)
    done = ort_rewrite.rewrite(after)
    # qkv, proj, fc1 and fc2 biases fold into their integer GEMMs (no BiasGelu fusion)
    assert (done.bias_folds, done.patch_convs) == (4 * depth, 1)
    a, b = _ops(before), _ops(after)
    assert a["BiasGelu"] == 0 and b["Gelu"] == a["Gelu"] == depth and b["Conv"] == 0
    assert b["Add"] == a["Add"] - 4 * depth
    assert b["MatMulIntegerToFloat"] == a["MatMulIntegerToFloat"] + 1  # the patch embedding
    assert b["QuantizeLinear"] == a["QuantizeLinear"]  # every activation quantizer is kept
    # the patch embedding's float dequantization of the image is gone, nothing else
    assert b["DequantizeLinear"] == a["DequantizeLinear"] - 2
    assert f"{4 * depth} biases into integer GEMMs" in str(done)


def test_bias_folds_are_bit_identical(nano_artifacts, digits, monkeypatch):
    plain = OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, rewrite=False, int8="integer")
    monkeypatch.setattr(ort_rewrite, "_patch_convs", lambda *a, **k: None)
    folded = OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, int8="integer")
    assert "biases into integer GEMMs, 0 patch" in folded.rewrites
    info = runtime.load(nano_artifacts.int8_onnx).info
    np.testing.assert_array_equal(_logits(folded, info, digits.test.images), _logits(plain, info, digits.test.images))


def test_the_rewritten_model_keeps_the_predictions(nano_artifacts, digits):
    plain = OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, rewrite=False, int8="integer")
    tuned = OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, int8="integer")
    assert tuned.rewrites.startswith("CPU rewrites") and plain.rewrites == "off"
    info = runtime.load(nano_artifacts.int8_onnx).info
    a, b = _logits(tuned, info, digits.test.images), _logits(plain, info, digits.test.images)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.99
    assert np.linalg.norm(a - b) <= 0.01 * np.linalg.norm(b)


def test_a_rewrite_that_changes_the_outputs_is_dropped(nano_artifacts, monkeypatch):
    """Whatever the reason (here: a patch embedding that reads the wrong weight), a rewrite
    whose outputs differ from the untouched graph's is not used, and the runner says so."""
    real = ort_rewrite._patch_convs

    def wrong_weights(g, inits, producer, done):
        real(g, inits, producer, done)
        for init in g.initializer:
            if init.name.endswith("/weight_kxn"):
                from onnx import numpy_helper

                w = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w[::-1]), init.name))

    monkeypatch.setattr(ort_rewrite, "_patch_convs", wrong_weights)
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, int8="integer") as runner:
        assert "0 patch convolutions" in runner.rewrites
        assert "dropped (outputs changed): patch embedding as integer GEMM" in runner.rewrites


def test_untested_onnxruntime_versions_get_no_rewrites(nano_artifacts, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "9.1.0")
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, int8="integer") as runner:
        assert runner.rewrites.startswith("CPU rewrites skipped: onnxruntime 9.1.0 is not a version")
        assert isinstance(runner._model, str)  # the file as it is


def test_fp32_models_are_left_alone(nano_artifacts):
    with OnnxRuntimeRunner(nano_artifacts.fp32_onnx, threads=1) as runner:
        assert runner.rewrites == "no CPU rewrites apply"
        assert isinstance(runner._model, str)


def test_a_failed_rewrite_runs_the_untouched_graph(nano_artifacts, digits, monkeypatch):
    def broken(path):
        raise RuntimeError("unexpected graph\nsecond line")

    monkeypatch.setattr(ort_rewrite, "rewrite_for_cpu", broken)
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, int8="integer") as runner:
        assert runner.rewrites == "CPU rewrites not applied (unexpected graph)"
        info = runtime.load(nano_artifacts.int8_onnx).info
        assert _logits(runner, info, digits.test.images[:4]).shape == (4, len(info.class_names))


def test_exact_int8_computes_the_qdq_graph_as_written(nano_artifacts, digits):
    """int8="exact": the Q/DQ graph in float, bit for bit what ONNX Runtime gives without any
    graph optimization (the artifact's own semantics, TensorRT's)."""
    import onnxruntime as ort

    x = runtime.load(nano_artifacts.int8_onnx).preprocess(digits.test.images)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(str(nano_artifacts.int8_onnx), opts, providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )[0]
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1, int8="exact") as runner:
        assert runner.name.endswith(":int8-exact") and runner.rewrites.startswith("off (INT8 computed exactly")
        got = runner.infer({runner.input_name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_auto_is_exact_where_integer_kernels_saturate(nano_artifacts, monkeypatch):
    from edgevit.runtime import ort_backend

    monkeypatch.setattr(ort_backend, "int8_dot_saturates", lambda: True)
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1) as runner:
        assert runner.exact_int8 and runner.name.endswith(":int8-exact")
    with OnnxRuntimeRunner(nano_artifacts.fp32_onnx, threads=1) as runner:
        assert not runner.exact_int8 and runner.name == "onnxruntime:CPUExecutionProvider"  # nothing to quantize
    monkeypatch.setattr(ort_backend, "int8_dot_saturates", lambda: False)
    with OnnxRuntimeRunner(nano_artifacts.int8_onnx, threads=1) as runner:
        assert not runner.exact_int8 and runner.rewrites.startswith("CPU rewrites")
