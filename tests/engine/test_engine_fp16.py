"""The FP16 ONNX conversion used for strongly typed FP16 / INT8+FP16 builds (TensorRT >= 10.12, 11.x)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevit.engine.fp16 import FP16_MAX, convert_file, convert_to_fp16
from edgevit.errors import QuantizationError
from edgevit.quant.rules import check_qdq_graph


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})[0]


def _input(path: Path, n: int = 16) -> np.ndarray:
    model = onnx.load(str(path), load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    return np.random.default_rng(0).standard_normal((n, *dims)).astype(np.float32)


@pytest.mark.parametrize("source", ["fp32", "int8"])
def test_fp16_model_keeps_fp32_io_and_matches(nano_variants: SimpleNamespace, tmp_path: Path, source: str) -> None:
    """FP32 inputs/outputs, LayerNorm and Softmax in FP32, everything else FP16; logits stay close."""
    src = nano_variants.fp32_onnx if source == "fp32" else nano_variants.int8_onnx
    dst = tmp_path / "model.fp16.onnx"
    report = convert_file(src, dst)
    model = onnx.load(str(dst))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {n.op_type for n in model.graph.node} >= {"Cast"}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            src_node = producers[node.input[0]]  # the activation arrives through a Cast to FP32
            assert src_node.op_type == "Cast" and src_node.attribute[0].i == TensorProto.FLOAT
    floats = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    fp32_inits = {i.name for i in floats if i.data_type == TensorProto.FLOAT}
    ln_params = {n.input[k] for n in model.graph.node if n.op_type == "LayerNormalization" for k in (1, 2)}
    assert fp32_inits <= ln_params  # only LayerNorm's gamma/beta stay FP32
    if source == "int8":
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert opset >= 19  # FP16 Q/DQ scales need opset 19
        assert check_qdq_graph(model) == []  # the conversion keeps TensorRT's Q/DQ rules
    else:
        assert report.opset == 17
    x = _input(src)
    a, b = _run(src, x), _run(dst, x)
    assert b.dtype == np.float32
    tol = 0.05 * max(1.0, float(np.abs(a).max()))
    assert float(np.abs(a - b).max()) < tol
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9


def test_calibrated_ranges_of_fp16_tensors_are_checked(nano_variants: SimpleNamespace) -> None:
    """A tensor that becomes FP16 with a calibrated range beyond 65504 is refused, by name."""
    from edgevit.quant.table import CalibrationTable

    model = onnx.load(str(nano_variants.fp32_onnx))
    table = CalibrationTable.load(nano_variants.calib_table)
    ranges = {n: max(abs(r.min), abs(r.max)) for n, r in table.tensors.items()}
    _, report = convert_to_fp16(model, ranges=ranges)
    assert report.range_checked > 0 and report.range_absmax < FP16_MAX
    victim = next(n for n in report.fp16_tensors if n in ranges)
    with pytest.raises(QuantizationError, match="beyond FP16"):
        convert_to_fp16(model, ranges={**ranges, victim: 1e6})


def test_ranges_of_tensors_kept_fp32_are_not_refused(nano_variants: SimpleNamespace) -> None:
    """LayerNorm outputs are computed in FP32 but cast back; LayerNorm-internal tensors never exist in FP16."""
    model = onnx.load(str(nano_variants.fp32_onnx))
    _, report = convert_to_fp16(model)
    assert "images" not in report.fp16_tensors and "logits" not in report.fp16_tensors


def test_weight_beyond_fp16_is_refused() -> None:
    w = numpy_helper.from_array(np.array([[1.0, 7e4]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["images", "w"], ["logits"], name="mm")],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(QuantizationError, match="'w' reaches 70000"):
        convert_to_fp16(model)


def test_shared_initializer_gets_an_fp32_twin() -> None:
    """An initializer read by LayerNorm (FP32) and by an FP16 op is duplicated, not forced to one type."""
    g = numpy_helper.from_array(np.ones(4, np.float32), "g")
    graph = helper.make_graph(
        [
            helper.make_node("LayerNormalization", ["images", "g", "g"], ["ln"], name="ln", axis=-1),
            helper.make_node("Mul", ["ln", "g"], ["logits"], name="mul"),
        ],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [g],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, _ = convert_to_fp16(model)
    types = {i.name: i.data_type for i in out.graph.initializer}
    assert types == {"g": TensorProto.FLOAT16, "g__fp32": TensorProto.FLOAT}
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    sess_a = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess_b = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess_a.run(None, {"images": x})[0], sess_b.run(None, {"images": x})[0], atol=5e-3)
