"""The fake-quantization probe, the per-layer sensitivity scan and the budget fallback."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgevit import runtime
from edgevit.artifacts import read_onnx_info
from edgevit.cli import main
from edgevit.quant.calibrate import calibration_indices, float_nodes
from edgevit.quant.config import QuantizeConfig
from edgevit.quant.probe import FakeQuantProbe
from edgevit.quant.quantize import quantize_onnx
from edgevit.quant.rules import check_qdq_graph
from edgevit.quant.sensitivity import _score
from edgevit.quant.smoothquant import inject_outliers
from edgevit.quant.table import CalibrationTable


@pytest.fixture(scope="module")
def outlier_model(nano_artifacts, tmp_path_factory):
    """The nano model with LayerNorm outliers (same FP32 function), and its plain `max`
    INT8 model, which loses accuracy on it."""
    d = tmp_path_factory.mktemp("outlier")
    m = onnx.load(str(nano_artifacts.fp32_onnx))
    inject_outliers(m, channels=4, factor=50.0)
    path = d / "outlier.onnx"
    onnx.save(m, str(path))
    cfg = QuantizeConfig(method="max", smoothquant=False, num_images=256, holdout_images=128, budget=0.0)
    r = quantize_onnx(path, d / "budget.onnx", cfg, calib_dir=d / "calib", progress=False)
    return path, r, cfg


def test_probe_is_fp32_when_off_and_matches_the_qdq_model_when_on(nano_artifacts, digits):
    table = CalibrationTable.load(nano_artifacts.calib_table)
    model = onnx.load(str(nano_artifacts.fp32_onnx))
    from edgevit.quant.calibrate import prepare_model

    prepare_model(model, table.transforms)
    probe = FakeQuantProbe(model, exclude=float_nodes(model, table.settings))
    assert len(probe.layers) == 18  # the attention matmuls stay float
    x = read_onnx_info(nano_artifacts.fp32_onnx).preprocess(digits.test.images)
    with runtime.load(nano_artifacts.fp32_onnx) as fp:
        ref = fp.logits(x)
    # the Q/DQ model as its graph says (what TensorRT computes): ONNX Runtime without its
    # integer fusions, whose u8s8 kernels saturate on CPUs without VNNI
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(nano_artifacts.int8_onnx), opts, providers=["CPUExecutionProvider"])
    real = sess.run(None, {"images": x})[0]
    np.testing.assert_allclose(probe.float_logits(x), ref, atol=1e-4)
    sim = probe.logits(x, {t: table.tensors[t].amax for t in probe.activations})
    assert np.abs(sim - real).max() < 0.25 * np.abs(real - ref).max() + 1e-3  # simulates the INT8 model
    assert (sim.argmax(1) == real.argmax(1)).mean() >= 0.99


def test_budget_leaves_the_fewest_layers_in_float(outlier_model, digits):
    path, r, cfg = outlier_model
    sens = r.table.sensitivity
    assert r.budget_met and sens is not None and sens["met"]
    assert sens["int8"]["drop"] > 0.0, "plain max must lose accuracy on the outlier model"
    fl = r.table.float_layers
    assert 1 <= len(fl) <= 4 and sens["result"]["drop"] <= 0.0
    assert fl == [n for n in sens["ranking"] if n in fl]
    assert set(sens["layers"]) == set(sens["ranking"]) and len(sens["ranking"]) == 18  # attention in float
    # the graph: exactly those layers without Q/DQ, everything else still INT8 and TensorRT-legal
    q = onnx.load(str(r.path))
    assert check_qdq_graph(q) == []
    assert r.summary["quantized_ops"] == 18 - len(fl)
    producer = {o: n for n in q.graph.node for o in n.output}
    for n in q.graph.node:
        if n.name in fl:
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in n.input)
    info = read_onnx_info(r.path)
    assert info.extra["quantization"]["float_layers"] == fl
    # fewest: no smaller set of layers meets the budget on the same held-out slice
    model = onnx.load(str(path))
    probe = FakeQuantProbe(model, exclude=float_nodes(model, r.table.settings))
    _, hold = calibration_indices(len(digits.train.images), cfg.num_images, cfg.holdout_images, cfg.seed)
    x = read_onnx_info(path).preprocess(digits.train.images[hold])
    y = digits.train.labels[hold]
    amax = {t: r.table.tensors[t].amax for t in probe.activations}
    ref = probe.float_logits(x)
    assert _score(ref, probe.logits(x, amax, fl), y).drop <= 0.0
    if len(fl) <= 2:
        import itertools

        for smaller in itertools.combinations(probe.layers, len(fl) - 1):
            assert _score(ref, probe.logits(x, amax, smaller), y).drop > 0.0


def test_fallback_is_reproducible_and_recorded(outlier_model, tmp_path):
    path, r, cfg = outlier_model
    table = CalibrationTable.load(r.table_path)
    assert table.float_layers == r.table.float_layers and table.sensitivity["seed"] == 0
    again = quantize_onnx(path, tmp_path / "again.onnx", cfg, calib_dir=tmp_path, calib_table=r.table_path)
    assert again.table.float_layers == r.table.float_layers
    assert again.table.sensitivity["layers"] == pytest.approx(r.table.sensitivity["layers"])
    # without a budget the default keeps everything INT8 that TensorRT would quantize
    plain = quantize_onnx(
        path, tmp_path / "plain.onnx", QuantizeConfig(method="max", num_images=64), calib_dir=tmp_path
    )
    assert plain.table.float_layers == [] and plain.summary["quantized_ops"] == 18


def test_an_impossible_budget_keeps_the_best_model_and_says_so(outlier_model, tmp_path, capsys):
    path, r, _ = outlier_model
    out = tmp_path / "impossible.onnx"
    code = main(
        [
            "quantize", str(path), "-o", str(out), "--calib-table", str(r.table_path),
            "--calib-dir", str(tmp_path), "--budget", "-50", "--holdout-images", "64", "-q",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "cannot be met even with every layer in floating point" in err
    assert out.exists() and check_qdq_graph(onnx.load(str(out))) == []
