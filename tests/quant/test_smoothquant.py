"""SmoothQuant folding and bias correction keep the graph plain and the FP32 function equal."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgevit import runtime
from edgevit.artifacts import read_onnx_info
from edgevit.quant.bias_correction import bias_correct
from edgevit.quant.config import QuantizeConfig
from edgevit.quant.graph import weight_fake_quant
from edgevit.quant.quantize import quantize_onnx
from edgevit.quant.rules import check_qdq_graph
from edgevit.quant.smoothquant import apply_channel_scales, find_layernorm_pairs, inject_outliers
from edgevit.quant.table import read_trt_cache


def _logits(model: onnx.ModelProto, path, images) -> np.ndarray:
    onnx.save(model, str(path))
    with runtime.load(path) as m:
        return m.logits(images)


def _inits(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_pairs_are_the_vit_layernorm_linear_pairs(nano_artifacts):
    pairs = find_layernorm_pairs(onnx.load(str(nano_artifacts.fp32_onnx)))
    names = sorted(p.layers[0] for p in pairs)
    # 4 blocks x (norm1 -> qkv, norm2 -> fc1), and the final norm -> class token (Gather) -> head
    assert len(pairs) == 9
    assert sum(n.endswith(("attn/qkv/MatMul", "mlp/fc1/MatMul")) for n in names) == 8
    head = next(p for p in pairs if p.layers[0].startswith("/head"))
    assert head.inputs != [head.output] and head.weight_in_axes == [1]  # the Gather's output; Gemm [N, K]


def test_folding_leaves_the_fp32_function_unchanged(nano_artifacts, digits, tmp_path):
    base = onnx.load(str(nano_artifacts.fp32_onnx))
    images = digits.test.images
    ref = _logits(base, tmp_path / "ref.onnx", images)
    rng = np.random.default_rng(0)
    for kind in ("smooth", "outliers"):
        m = onnx.ModelProto()
        m.CopyFrom(base)
        if kind == "smooth":
            pairs = find_layernorm_pairs(m)
            dims = {p.output: _inits(m)[p.gamma].shape[0] for p in pairs}
            apply_channel_scales(m, {k: np.exp(rng.uniform(-3, 3, d)).astype(np.float32) for k, d in dims.items()})
        else:
            inject_outliers(m, channels=4, factor=100.0)
        before, after = _inits(base), _inits(m)
        changed = [k for k in before if not np.array_equal(before[k], after[k])]
        assert len(changed) == 9 * 3  # gamma, beta, next weight of each pair: nothing else
        assert [n.op_type for n in m.graph.node] == [n.op_type for n in base.graph.node]  # plain graph
        out = _logits(m, tmp_path / f"{kind}.onnx", images)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        assert (out.argmax(1) == ref.argmax(1)).all()


def test_smoothquant_rescues_the_outlier_model(nano_artifacts, digits, tmp_path):
    m = onnx.load(str(nano_artifacts.fp32_onnx))
    inject_outliers(m, channels=4, factor=50.0)
    outlier = tmp_path / "outlier.onnx"
    onnx.save(m, str(outlier))
    with runtime.load(outlier) as fp:
        ref = fp.logits(digits.test.images)
    kls = {}
    for sq in (False, True):
        r = quantize_onnx(
            outlier,
            tmp_path / f"sq{sq}.onnx",
            QuantizeConfig(method="max", num_images=128, smoothquant=sq),
            calib_dir=tmp_path,
            progress=False,
        )
        q = onnx.load(str(r.path))
        assert check_qdq_graph(q) == []
        with runtime.load(r.path) as qm:
            out = qm.logits(digits.test.images)
        p = np.exp(ref - ref.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        lq = out - out.max(1, keepdims=True)
        lq = lq - np.log(np.exp(lq).sum(1, keepdims=True))
        kls[sq] = float(np.mean(np.sum(p * (np.log(p + 1e-12) - lq), axis=1)))
        if sq:
            info = read_onnx_info(r.path)
            assert info.extra["quantization"]["transforms"] == ["smoothquant"]
            assert len(info.extra["quantization"]["smoothquant"]["scales"]) == 9  # 4 blocks x 2 + the head
            # the TensorRT cache (implicit path, unsmoothed FP32 model) keeps the original ranges
            _, scales = read_trt_cache(r.cache_path)
            orig = r.table.transforms["smoothquant"]["original_amax"]
            for name, amax in orig.items():
                assert scales[name] == pytest.approx(amax / 127.0, rel=1e-6)
                assert amax > 5 * r.table.tensors[name].amax  # the outliers were moved away
    assert kls[True] < 0.2 * kls[False]


def test_bias_correction_cancels_the_mean_weight_error(nano_artifacts):
    m = onnx.load(str(nano_artifacts.fp32_onnx))
    node = next(n for n in m.graph.node if n.name.endswith("blocks.0/mlp/fc1/MatMul"))
    add = next(n for n in m.graph.node if node.output[0] in n.input)
    bias_name = next(i for i in add.input if i != node.output[0])
    w, b = _inits(m)[node.input[1]], _inits(m)[bias_name]
    mean = np.random.default_rng(0).standard_normal(w.shape[0]).astype(np.float32)
    done = bias_correct(m, {node.input[0]: mean})
    assert done == [node.name]
    b2 = _inits(m)[bias_name]
    wq = weight_fake_quant(w, axis=1)
    np.testing.assert_allclose(mean @ wq + b2, mean @ w + b, atol=1e-5)
    assert not np.allclose(b2, b)
