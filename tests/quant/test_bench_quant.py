"""The quantization accuracy benchmark runs end to end on a small configuration."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quant_accuracy.py"


@pytest.mark.slow
def test_benchmark_quick_run_writes_every_field(nano_artifacts, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_quant_accuracy", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_quant_accuracy"] = bench  # dataclasses look their module up
    spec.loader.exec_module(bench)
    out = tmp_path / "q.json"
    args = ["--quick", "--no-trt", "--model", str(nano_artifacts.fp32_onnx), "--work", str(tmp_path), "--out", str(out)]
    assert bench.main(args) == 0
    res = json.loads(out.read_text())
    assert res["machine"] and set(res["cases"]) == {"digits", "outliers"}
    for case in res["cases"].values():
        assert set(case["rows"]) == {"edgevit (default)", "edgevit --method max", "edgevit --method mse"}
        for row in case["rows"].values():
            assert {"agreement", "mean_kl", "drop", "runtime_agreement", "seconds"} <= set(row)
            assert len(row["draws"]) == 2 and {"mean", "std", "min"} <= set(row["agreement"])
    # the planted outliers cost the default (SmoothQuant) at most what they cost plain max ranges
    rows = res["cases"]["outliers"]["rows"]
    assert rows["edgevit (default)"]["agreement"]["mean"] >= rows["edgevit --method max"]["agreement"]["mean"] - 1.0
    assert any(t["case"] == "outliers" for t in res["targets"])
    assert "| quantizer |" in bench.to_markdown(res)
