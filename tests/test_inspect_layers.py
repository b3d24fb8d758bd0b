"""``edgevit inspect``: per quantized tensor SQNR and ranges, with plots, without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgevit.cli import main
from edgevit.errors import ArtifactError
from edgevit.inspect_layers import inspect_layers, save_report


def test_report_covers_every_quantized_tensor(nano_artifacts, digits, tmp_path):
    q = onnx.load(str(nano_artifacts.int8_onnx))
    q_inputs = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    report = inspect_layers(nano_artifacts.fp32_onnx, nano_artifacts.int8_onnx, digits.test.images[:64], "digits:test")
    acts = {t.tensor: t for t in report.tensors if t.kind == "activation"}
    weights = [t for t in report.tensors if t.kind == "weight"]
    assert set(acts) == q_inputs
    assert len(weights) == 18  # conv, head and 16 block Linear weights (attention matmuls have none)
    for t in report.tensors:
        assert t.layers, t.tensor
        assert 10.0 < t.sqnr_db < 80.0 and np.isfinite(t.sqnr_vs_fp32_db), t
        assert t.amax > 0 and 0.0 <= t.clipped_percent < 50.0
    for t in acts.values():
        assert t.sqnr_vs_fp32_db > 15.0, t
        assert t.sqnr_vs_fp32_db <= t.sqnr_db + 1.0 or t.tensor == "images"
    assert report.agreement >= 95.0

    paths = save_report(report, tmp_path / "layers")
    names = sorted(p.name for p in paths)
    assert names == ["layers.json", "layers.md", "sqnr_by_layer.png", "worst_histograms.png"]
    for p in paths:
        assert p.stat().st_size > 500
    assert (tmp_path / "layers" / "sqnr_by_layer.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "layers" / "layers.json").read_text())
    assert {"tensor", "kind", "layers", "amax", "observed_max", "sqnr_db", "sqnr_vs_fp32_db"} <= set(data["tensors"][0])
    assert "Lowest SQNR" in (tmp_path / "layers" / "layers.md").read_text()


def test_cli_inspect_and_bad_inputs(nano_artifacts, tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(
        ["inspect", str(nano_artifacts.fp32_onnx), str(nano_artifacts.int8_onnx), "--limit", "32", "--out", str(out)]
    )
    assert code == 0 and (out / "layers.md").exists()
    assert "lowest SQNR" in capsys.readouterr().out
    with pytest.raises(ArtifactError, match="compares an FP32 model with its INT8"):
        inspect_layers(nano_artifacts.int8_onnx, nano_artifacts.fp32_onnx, np.zeros((2, 8, 8, 1), np.uint8))


def test_inspect_does_not_import_torch():
    code = "import sys, edgevit.inspect_layers, edgevit.quant.stats, edgevit.quant.sensitivity, edgevit.quant.smoothquant; "
    code += "sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_smoothed_tensors_are_compared_after_undoing_the_scales(nano_artifacts, digits, tmp_path):
    from edgevit.quant.config import QuantizeConfig
    from edgevit.quant.quantize import quantize_onnx

    r = quantize_onnx(
        nano_artifacts.fp32_onnx,
        tmp_path / "sq.onnx",
        QuantizeConfig(num_images=64, smoothquant=True),
        calib_dir=tmp_path,
        progress=False,
    )
    report = inspect_layers(nano_artifacts.fp32_onnx, r.path, digits.test.images[:64])
    import onnx

    from edgevit.quant.smoothquant import find_layernorm_pairs

    pairs = find_layernorm_pairs(onnx.load(str(nano_artifacts.fp32_onnx)))
    assert {p.output for p in pairs} == set(r.table.transforms["smoothquant"]["scales"])
    smoothed = {t for p in pairs for t in p.inputs}  # the quantized tensors that carry y / s
    by_name = {t.tensor: t for t in report.tensors}
    assert smoothed <= set(by_name) and any(p.inputs != [p.output] for p in pairs)  # the head's class token
    for name in smoothed:  # without undoing the scales these would be near 0 dB
        assert by_name[name].sqnr_vs_fp32_db > 20.0, by_name[name]
    for t in report.tensors:
        if t.kind == "weight" and any(n.endswith(("qkv/MatMul", "fc1/MatMul", "head/Gemm")) for n in t.layers):
            assert t.sqnr_db > 20.0, t  # smoothed weights compared with W * s
