from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgevit import runtime
from edgevit.artifacts import read_onnx_info, sha256_file
from edgevit.errors import ArtifactError, DataError, EdgeVitError, QuantizationError
from edgevit.quant.calibrate import calibration_indices
from edgevit.quant.config import QuantizeConfig
from edgevit.quant.graph import attention_matmuls
from edgevit.quant.quantize import quantize_onnx
from edgevit.quant.rules import check_qdq_graph
from edgevit.quant.table import CalibrationTable, read_trt_cache

FLOAT_OPS = ("LayerNormalization", "Softmax", "Add", "Erf", "Mul", "Div", "Concat")


def _graph(path):
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    return model, inits, producer


def test_qdq_rules_hold_node_by_node(nano_artifacts):
    model, inits, producer = _graph(nano_artifacts.int8_onnx)
    nodes = model.graph.node
    assert check_qdq_graph(model) == []
    assert not any(n.op_type.startswith("QLinear") or n.op_type.endswith("Integer") for n in nodes)

    for n in nodes:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point must be INT8 0"
        if n.op_type == "QuantizeLinear":
            assert inits[n.input[1]].size == 1, f"{n.name}: activations are per tensor"
            src = producer.get(n.input[0])
            assert src is None or src.op_type not in ("MatMul", "Gemm", "Conv"), f"{n.name} quantizes an output"
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].dtype == np.int8, "only INT8 enters a DequantizeLinear (no INT32 bias)"
        if n.op_type in FLOAT_OPS:
            for i in n.input:
                src = producer.get(i)
                assert src is None or src.op_type != "DequantizeLinear", f"{n.op_type} {n.name} must stay float"

    weighted = [n for n in nodes if n.op_type in ("MatMul", "Gemm", "Conv")]
    assert len(weighted) == 26  # conv + 4 blocks x (qkv, 2 attention bmm, proj, fc1, fc2) + head
    attention = set(attention_matmuls(model))
    assert len(attention) == 8
    for n in weighted:
        if n.name in attention:  # the policy keeps the attention batch matmuls in floating point
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in n.input)
            continue
        for idx in (0, 1):
            dq = producer.get(n.input[idx])
            assert dq is not None and dq.op_type == "DequantizeLinear", f"{n.name} input {idx} not quantized"
            if dq.input[0] in inits:  # weight: per output channel
                w, scale = inits[dq.input[0]], inits[dq.input[1]]
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
                if n.op_type == "Conv":
                    assert axis == 0 and scale.size == w.shape[0]
                elif n.op_type == "Gemm":
                    trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
                    assert trans_b == 1 and axis == 0 and scale.size == w.shape[0]
                else:
                    assert axis == 1 and scale.size == w.shape[1]
        if n.op_type in ("Gemm", "Conv") and len(n.input) > 2:
            assert n.input[2] in inits and inits[n.input[2]].dtype == np.float32, "biases stay float"


def test_rule_checker_catches_onnx_runtime_default_quantization(nano_artifacts, tmp_path, digits):
    """ONNX Runtime's defaults (uint8 asymmetric activations, INT32 biases, Q/DQ on every
    op) break TensorRT's rules; the checker must say so, node by node."""
    from onnxruntime.quantization import QuantType, quantize_static

    info = read_onnx_info(nano_artifacts.fp32_onnx)
    batches = iter([{"images": info.preprocess(digits.train.images[i : i + 16])} for i in (0, 16)])

    class Reader:  # ONNX Runtime's CalibrationDataReader protocol
        def get_next(self):
            return next(batches, None)

    reader = Reader()
    out = tmp_path / "ort_default.onnx"
    quantize_static(
        str(nano_artifacts.fp32_onnx), str(out), reader, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8
    )
    problems = check_qdq_graph(onnx.load(str(out)))
    text = "\n".join(problems)
    assert "zero point is uint8" in text
    assert "only INT8 may enter a DequantizeLinear" in text  # INT32 bias
    assert "Q/DQ belong only on MatMul/Gemm/Conv inputs" in text


def test_rule_checker_tells_tensorrt_rules_from_edgevits_policy(nano_artifacts, tmp_path, digits):
    """ONNX Runtime's TensorRT recipe keeps FP32 weights behind their own per-channel Q/DQ
    pairs: TensorRT accepts that (no rule broken); edgevit's policy (INT8 weights) notes it."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgevit.quant.rules import check_qdq

    info = read_onnx_info(nano_artifacts.fp32_onnx)
    batches = iter([{"images": info.preprocess(digits.train.images[:32])}])

    class Reader:
        def get_next(self):
            return next(batches, None)

    out = tmp_path / "ort_trt.onnx"
    quantize_static(
        str(nano_artifacts.fp32_onnx),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm", "Conv"],
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": True,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm", "Conv"],
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        },
    )
    found = check_qdq(onnx.load(str(out)))
    assert found.tensorrt == []
    assert found.policy and all("stored in FP32 behind Q/DQ" in p for p in found.policy)
    assert check_qdq(onnx.load(str(nano_artifacts.int8_onnx))).all == []


def test_int8_keeps_accuracy_on_the_nano_model(nano_artifacts, digits):
    with runtime.load(nano_artifacts.fp32_onnx) as ref, runtime.load(nano_artifacts.int8_onnx) as q:
        a = ref.logits(digits.test.images)
        b = q.logits(digits.test.images)
    agreement = (a.argmax(1) == b.argmax(1)).mean()
    assert agreement >= 0.98
    assert abs((a.argmax(1) == digits.test.labels).mean() - (b.argmax(1) == digits.test.labels).mean()) <= 0.01
    assert nano_artifacts.int8_onnx.stat().st_size < 0.5 * nano_artifacts.fp32_onnx.stat().st_size


def test_calibration_table_and_cache_describe_the_model(nano_artifacts):
    table = CalibrationTable.load(nano_artifacts.calib_table)
    assert table.model_sha256 == sha256_file(nano_artifacts.fp32_onnx)
    assert table.image_source == "digits:train" and table.num_images == 256 and table.method == "percentile"
    quantized = {n for n, r in table.tensors.items() if r.quantized}
    assert "images" in quantized and len(quantized) >= 15  # the attention matmuls' inputs stay float
    assert len(table.tensors) > len(quantized)  # every float tensor is in the TensorRT cache
    for r in table.tensors.values():
        assert r.amax <= max(abs(r.min), abs(r.max)) + 1e-6
    header, scales = read_trt_cache(nano_artifacts.trt_cache)
    assert header.startswith("TRT-") and header.endswith("EntropyCalibration2")
    assert set(scales) == set(table.tensors)
    info = read_onnx_info(nano_artifacts.int8_onnx)
    assert info.precision == "int8" and info.source_sha256 == table.model_sha256
    assert info.extra["quantization"]["quantized_ops"] == 18  # attention batch matmuls in float
    assert info.extra["quantization"]["settings"]["attention"] == "float"


def test_calibration_uses_training_images_only(nano_artifacts, digits, monkeypatch, tmp_path):
    import edgevit.quant.quantize as q

    seen = {}
    real = q.calibrate

    def spy(model_path, images, *args, **kwargs):
        seen["images"] = images
        return real(model_path, images, *args, **kwargs)

    monkeypatch.setattr(q, "calibrate", spy)
    quantize_onnx(nano_artifacts.fp32_onnx, tmp_path / "m.onnx", QuantizeConfig(num_images=64), calib_dir=tmp_path)
    train_rows = {img.tobytes() for img in digits.train.images}
    heldout_only = {img.tobytes() for img in np.concatenate([digits.val.images, digits.test.images])} - train_rows
    assert len(seen["images"]) == 64
    assert all(img.tobytes() in train_rows for img in seen["images"])
    assert not any(img.tobytes() in heldout_only for img in seen["images"])


def test_methods_differ_and_max_is_widest(nano_artifacts, tmp_path):
    tables = {}
    for method in ("max", "percentile", "entropy"):
        r = quantize_onnx(
            nano_artifacts.fp32_onnx,
            tmp_path / f"{method}.onnx",
            QuantizeConfig(method=method, num_images=64, num_bins=256 if method == "entropy" else None),
            calib_dir=tmp_path,
            progress=False,
        )
        assert check_qdq_graph(onnx.load(str(r.path))) == []
        tables[method] = r.table
    for name, r in tables["max"].tensors.items():
        assert r.amax >= tables["percentile"].tensors[name].amax - 1e-6
    assert any(tables["entropy"].tensors[n].amax < 0.99 * tables["max"].tensors[n].amax for n in tables["max"].tensors)


def test_reusing_a_table_gives_the_same_model_and_a_foreign_table_is_refused(nano_artifacts, tmp_path):
    again = quantize_onnx(nano_artifacts.fp32_onnx, tmp_path / "again.onnx", calib_table=nano_artifacts.calib_table)
    a, b = onnx.load(str(nano_artifacts.int8_onnx)), onnx.load(str(again.path))
    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)

    foreign = CalibrationTable.load(nano_artifacts.calib_table)
    foreign.model_sha256 = "0" * 64
    foreign.save(tmp_path / "foreign.json")
    with pytest.raises(ArtifactError, match="made for model sha256"):
        quantize_onnx(nano_artifacts.fp32_onnx, tmp_path / "x.onnx", calib_table=tmp_path / "foreign.json")
    assert not (tmp_path / "x.onnx").exists()


def test_bad_calibration_requests(nano_artifacts, tmp_path):
    with pytest.raises(DataError, match="at least 2"):
        QuantizeConfig(num_images=1)
    with pytest.raises(DataError, match="at least 2"):
        calibration_indices(1, 512, 256, 0)
    with pytest.raises(EdgeVitError, match="unknown calibration method"):
        QuantizeConfig(method="magic")
    with pytest.raises(QuantizationError, match="already int8"):
        quantize_onnx(nano_artifacts.int8_onnx, tmp_path / "y.onnx")
    with pytest.raises(DataError, match="pass --data"):
        quantize_onnx(nano_artifacts.fp32_onnx, tmp_path / "z.onnx", data=str(tmp_path / "nowhere"))
    assert not list(tmp_path.glob("*.onnx"))


def test_int8_attention_quantizes_the_attention_matmuls_too(nano_artifacts, tmp_path):
    r = quantize_onnx(
        nano_artifacts.fp32_onnx,
        tmp_path / "att.onnx",
        QuantizeConfig(num_images=64, int8_attention=True),
        calib_dir=tmp_path,
        progress=False,
    )
    assert r.summary["quantized_ops"] == 26 and r.table.settings["attention"] == "int8"
    assert check_qdq_graph(onnx.load(str(r.path))) == []
    softmax = [t for t in r.table.tensors.values() if t.quantized and t.method in ("percentile", "softmax-floor")]
    assert softmax  # the softmax outputs are quantized now, never below their 99.999th percentile
