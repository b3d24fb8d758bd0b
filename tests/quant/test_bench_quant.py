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
    args = [
        "--quick",
        "--skip-tiny",
        "--model",
        str(nano_artifacts.fp32_onnx),
        "--work",
        str(tmp_path),
        "--out",
        str(out),
    ]
    assert bench.main(args) == 0
    res = json.loads(out.read_text())
    assert res["machine"] and set(res["cases"]) == {"digits", "outliers"}
    for case in res["cases"].values():
        for row in case["variants"].values():
            assert {"fp32_top1", "int8_top1", "drop", "agreement", "mean_kl", "quantize_s"} <= set(row)
        stab = case["stability"]["percentile+smoothquant (default)"]
        assert stab["draws"] == 2 and {"mean", "std"} <= set(stab["drop"])
        assert set(case["calibration_size"]["percentile+smoothquant (default)"]) == {"32", "64"}
    out_cases = res["cases"]["outliers"]["variants"]
    assert out_cases["percentile+smoothquant (default)"]["agreement"] >= out_cases["max"]["agreement"]
    assert "Stability" in bench.to_markdown(res)
