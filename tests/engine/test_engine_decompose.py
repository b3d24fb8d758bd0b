"""LayerNorm decomposed for TensorRT < 8.6 (JetPack 5): same outputs as the original graph
(ONNX Runtime, FP32 and INT8 Q/DQ models), Q/DQ placement untouched, and every op in
onnx-tensorrt 8.5's table. tests/engine/test_trt_parse_build.py parses and builds it with
TensorRT's parser (tensorrt-rtx)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevit.engine.decompose import MARK, decompose_layernorm, is_decomposed
from edgevit.engine.opcheck import check_graph, load_table
from edgevit.errors import ArtifactError
from edgevit.quant.rules import check_qdq_graph


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    # ORT would fuse the decomposed pattern back into its LayerNormalization kernel: run the ops as written
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _images(model: onnx.ModelProto, n: int = 16) -> np.ndarray:
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    return np.random.default_rng(0).standard_normal((n, *dims)).astype(np.float32) * 3


@pytest.mark.parametrize("source", ["fp32", "int8"])
def test_decomposed_graph_gives_the_same_outputs(nano_variants: SimpleNamespace, source: str) -> None:
    path = nano_variants.fp32_onnx if source == "fp32" else nano_variants.int8_onnx
    model = onnx.load(str(path))
    n_ln = sum(node.op_type == "LayerNormalization" for node in model.graph.node)
    out, count = decompose_layernorm(model)
    onnx.checker.check_model(out)
    assert count == n_ln > 0
    assert not any(node.op_type == "LayerNormalization" for node in out.graph.node)
    x = _images(model)
    a = _session(model).run(None, {"images": x})[0]
    b = _session(out).run(None, {"images": x})[0]
    # FP32: float rounding only. INT8: a value on a rounding edge of a Q node may move one step.
    tol = 1e-4 if source == "fp32" else 2e-2
    np.testing.assert_allclose(b, a, rtol=0, atol=tol * max(1.0, float(np.abs(a).max())))
    assert (a.argmax(1) == b.argmax(1)).all()


def test_qdq_placement_is_untouched(nano_variants: SimpleNamespace) -> None:
    """Q/DQ only on MatMul/Gemm/Conv inputs (edgevit's rules), and the very same Q/DQ nodes and scales."""
    model = onnx.load(str(nano_variants.int8_onnx))
    out, _ = decompose_layernorm(model)
    assert check_qdq_graph(out) == []

    def qdq(m: onnx.ModelProto) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        return [(n.name, tuple(n.input), tuple(n.output)) for n in m.graph.node if n.op_type.endswith("QuantizeLinear")]

    assert qdq(out) == qdq(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for init in out.graph.initializer:
        if init.name in inits:
            np.testing.assert_array_equal(numpy_helper.to_array(init), inits[init.name])
    assert all(is_decomposed(n.name) for n in out.graph.node if n.name not in {m.name for m in model.graph.node})


@pytest.mark.parametrize("source", ["fp32", "int8"])
def test_every_op_is_in_the_8_5_table(nano_variants: SimpleNamespace, source: str) -> None:
    """onnx-tensorrt 8.5-GA's operator table: the original fails (LayerNormalization N), the decomposition passes."""
    path = nano_variants.fp32_onnx if source == "fp32" else nano_variants.int8_onnx
    model = onnx.load(str(path))
    table = load_table("8.5")
    assert check_graph(model, table) == [f"LayerNormalization (x{9}) is not supported"]
    out, _ = decompose_layernorm(model)
    assert check_graph(out, table) == []
    ops = {n.op_type for n in out.graph.node if is_decomposed(n.name)}
    assert ops == {"ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div", "Mul"}
    assert next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx")) == 17


def _ln_model(opset: int, axis: int = -1, bias: bool = True, extra_outputs: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.uniform(0.5, 1.5, (4, 6)).astype(np.float32), "g")]
    inputs = ["x", "g"]
    if bias:
        inits.append(numpy_helper.from_array(rng.uniform(-1, 1, (4, 6)).astype(np.float32), "b"))
        inputs.append("b")
    outputs = ["y", "mean", ""] if extra_outputs else ["y"]
    node = helper.make_node("LayerNormalization", inputs, outputs, name="ln", axis=axis, epsilon=1e-3)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(("opset", "axis", "bias"), [(17, -1, True), (17, -2, True), (17, 2, False), (18, -2, True)])
def test_axes_bias_and_opset_18(opset: int, axis: int, bias: bool) -> None:
    """Normalizing over several axes, no bias, and ReduceMean's opset-18 form (axes as an input)."""
    model = _ln_model(opset, axis, bias)
    out, count = decompose_layernorm(model)
    onnx.checker.check_model(out)
    assert count == 1
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 6)).astype(np.float32) * 20 + 5
    np.testing.assert_allclose(_session(out).run(None, {"x": x})[0], _session(model).run(None, {"x": x})[0], atol=1e-4)
    reduce = next(n for n in out.graph.node if n.op_type == "ReduceMean")
    assert (len(reduce.input) == 2) == (opset >= 18)
    assert reduce.name == "ln" + MARK + "ReduceMean_mean"


def test_graph_without_layernorm_is_unchanged() -> None:
    model = _ln_model(17)
    del model.graph.node[:]
    model.graph.node.append(helper.make_node("Identity", ["x"], ["y"], name="id"))
    out, count = decompose_layernorm(model)
    assert count == 0 and out == model


def test_mean_output_in_use_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="Mean/InvStdDev"):
        decompose_layernorm(_ln_model(17, extra_outputs=True))
