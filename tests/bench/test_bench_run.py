"""``edgevit bench`` on the nano model: it runs in seconds, its JSON has every field, and
every ratio it reports or prints is computed from the same run's numbers; the benchmarks'
acceptance targets (``benchmarks/check_targets.py``) are checked from the report alone. No
timing assertions: the machine is shared and noisy."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.bench import BenchConfig, compute_ratios, format_report, run_bench, write_report
from edgevit.bench.targets import open_spec
from edgevit.errors import BackendError, EdgeVitError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
FAST = {"batch_sizes": [1, 4], "rounds": 2, "min_time": 0.0, "min_calls": 2, "warmup": 1, "preprocess_rounds": 1}


@pytest.fixture(scope="module")
def check_targets():
    spec = importlib.util.spec_from_file_location("check_targets", BENCHMARKS / "check_targets.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def targets() -> dict:
    return json.loads((BENCHMARKS / "targets.json").read_text())


@pytest.fixture(scope="module")
def nano_report(nano_artifacts, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(
        artifacts=[nano_artifacts.fp32_onnx, nano_artifacts.int8_onnx],
        checkpoints=[nano_artifacts.checkpoint],
        backends=["onnxruntime"],
        threads=1,
        variants=True,
        workdir=work / "models",
        calib_images=4,
        **FAST,
    )
    return run_bench(cfg, progress=False)


def test_report_has_every_field(nano_report):
    r = nano_report
    assert r["schema"] == "edgevit-bench/2"
    assert "claims" not in r  # acceptance targets are the benchmarks', checked by benchmarks/check_targets.py
    assert {"description", "cpu", "cores", "python", "versions"} <= set(r["machine"])
    assert r["threads"] == 1
    assert len(r["loadavg"]["start"]) == 3 and len(r["loadavg"]["end"]) == 3
    assert len(r["loadavg"]["rounds"]) == 2
    assert {"batch_sizes", "rounds", "min_time_s", "inputs", "throughput", "latency", "timer", "memory"} <= set(
        r["settings"]
    )
    kinds = {t["kind"] for t in r["targets"]}
    assert kinds == {
        "ort-fp32",
        "ort-int8-ortdefault",
        "ort-int8-noattn",
        "ort-int8-u8act",
        "ort-int8",
        "ort-int8-session",
        "ort-int8-plain",
        "ort-fp32-plain",
        "torch-fp32",
    }
    for t in r["targets"]:
        assert {
            "id",
            "group",
            "kind",
            "label",
            "backend",
            "precision",
            "file_mb",
            "threads",
            "timer",
            "mem_load_mb",
        } <= set(t)
        assert t["group"] == "nano" and t["threads"] == 1 and t["timer"] == "perf_counter"
    assert len(r["results"]) == len(r["targets"]) * 2
    for row in r["results"]:
        assert row["batch"] in (1, 4)
        assert row["throughput"] > 0 and len(row["throughput_rounds"]) == 2
        assert row["calls"] >= 4  # min_calls x rounds
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        # peak memory comes from a fresh process per target: present, positive, growing with the batch
        assert row["mem_mb"] is not None and row["mem_mb"] >= 0
        assert row["peak_rss_mb"] > row["mem_mb"]
    for t in r["targets"]:
        assert t["memory_error"] is None and t["mem_load_mb"] is not None
    for kind in kinds:
        mems = [row["mem_mb"] for row in sorted(r["results"], key=lambda x: x["batch"]) if row["kind"] == kind]
        assert mems == sorted(mems)  # the peak only grows: batch sizes run in ascending order
    # the ONNX Runtime runners state their provider, PyTorch its version
    assert any(t["backend"].startswith("onnxruntime:CPUExecutionProvider") for t in r["targets"])
    assert any(t["backend"].startswith("torch ") for t in r["targets"])
    # preprocessing is measured separately, including the 32 px and 224 px cases
    sizes = {(p["size"], p["channels"], p["resize"]) for p in r["preprocess"]}
    assert {(8, 1, False), (8, 1, True), (32, 3, False), (224, 3, False)} <= sizes
    assert all(p["images_per_s"] > 0 for p in r["preprocess"])
    json.dumps(r)  # JSON-ready as it is


def test_throughput_is_the_median_of_the_rounds(nano_report):
    for row in nano_report["results"]:
        assert row["throughput"] == pytest.approx(float(np.median(row["throughput_rounds"])), rel=1e-3)


def test_ratios_are_computed_from_the_same_runs_results(nano_report):
    thr = {(r["group"], r["kind"], r["batch"]): r["throughput"] for r in nano_report["results"]}
    ratios = nano_report["ratios"]
    assert ratios
    for q in ratios:
        num = thr[(q["group"], q["numerator"], q["batch"])]
        den = thr[(q["group"], q["denominator"], q["batch"])]
        assert q["numerator_throughput"] == num and q["denominator_throughput"] == den
        assert q["ratio"] == pytest.approx(num / den, abs=1e-3)
    # every target is compared with ONNX Runtime FP32 at every batch size
    pairs = {(q["numerator"], q["batch"]) for q in ratios if q["denominator"] == "ort-fp32"}
    assert ("ort-int8", 4) in pairs and ("torch-fp32", 1) in pairs
    # recomputing from the results alone gives the same ratios
    assert compute_ratios(nano_report) == ratios


def test_printed_ratios_come_from_the_report(nano_report):
    text = format_report(nano_report)
    by_target = {t["id"]: t for t in nano_report["targets"]}
    vs_fp32 = {
        (q["numerator"], q["batch"]): q["ratio"] for q in nano_report["ratios"] if q["denominator"] == "ort-fp32"
    }
    for row in nano_report["results"]:
        if row["kind"] == "ort-fp32":
            continue
        label = by_target[row["target"]]["label"]
        line = next(ln for ln in text.splitlines() if ln.startswith(f"nano b{row['batch']} ") and label in ln)
        printed = float(re.search(r"([0-9.]+)x", line.split("]")[-1]).group(1))
        assert printed == pytest.approx(vs_fp32[(row["kind"], row["batch"])], abs=0.006)
        assert f"{row['throughput']:.1f}" in line
    assert "MISSED" not in text and "ratios from this run" not in text  # numbers and ratios, no pass/fail


def test_benchmark_targets_are_checked_from_the_report_alone(nano_report, check_targets, targets, tmp_path, capsys):
    claims = check_targets.evaluate(nano_report, targets)
    overhead = [c for c in claims if c["numerator"] == "ort-int8-session"]
    assert {c["batch"] for c in overhead} == {1, 4}
    thr = {(r["kind"], r["batch"]): r["throughput"] for r in nano_report["results"]}
    for c in overhead:
        assert c["value"] == pytest.approx(
            thr[("ort-int8-session", c["batch"])] / thr[("ort-int8", c["batch"])] - 1, abs=1e-4
        )
    size = next(c for c in claims if c["numerator"] == "int8 file MB")
    sizes = {t["kind"]: t["file_mb"] for t in nano_report["targets"]}
    assert size["value"] == pytest.approx(sizes["ort-int8"] / sizes["ort-fp32"], abs=1e-3)
    pre = [c for c in claims if c["numerator"] == "images/s"]
    assert len(pre) == len(targets["preprocess"]) and all(c["value"] for c in pre)  # every run times them
    report = tmp_path / "r.json"
    report.write_text(json.dumps(nano_report))
    code = check_targets.main([str(report)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(claims)
    assert code == (1 if any(c["met"] is False for c in claims) else 0)


def test_speed_targets_use_batch_8_of_the_tiny_group(check_targets, targets):
    def row(kind: str, thr: float) -> dict:
        return {"group": "tiny", "kind": kind, "batch": 8, "throughput": thr}

    report = {
        "results": [
            row("ort-fp32", 60.0),
            row("torch-fp32", 40.0),
            row("ort-int8-ortdefault", 50.0),
            row("ort-int8", 100.0),
            row("ov-int8", 160.0),
        ],
        "targets": [],
        "preprocess": [],
    }
    claims = {(c["numerator"], c["denominator"]): c for c in check_targets.evaluate(report, targets)}
    assert claims[("ort-int8", "ort-fp32")]["value"] == pytest.approx(100 / 60, abs=1e-3)
    assert claims[("ort-int8", "ort-fp32")]["met"] is True
    assert claims[("ort-int8", "torch-fp32")]["met"] is True
    assert claims[("ov-int8", "ort-fp32")]["value"] == pytest.approx(160 / 60, abs=1e-3)
    assert claims[("ort-int8", "ort-int8-ortdefault")]["met"] is True  # 2.0 >= 1.5
    report["results"] = [dict(r, group="nano") for r in report["results"]]
    assert not [c for c in check_targets.evaluate(report, targets) if c["group"] == "nano"]  # tiny's targets


def test_write_report_makes_json_and_png(nano_report, tmp_path):
    paths = write_report(nano_report, tmp_path, "b")
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(nano_report))
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["png"].stat().st_size < 300_000
    md = paths["md"].read_text()
    for q in nano_report["ratios"]:
        if q["denominator"] == "ort-fp32":
            assert f"| {q['ratio']:.2f}x |" in md
    assert "Load average" in md and str(nano_report["loadavg"]["start"]) in md


def test_cli_bench_prints_table_and_writes_outputs(nano_artifacts, tmp_path, capsys):
    from edgevit.cli import main

    code = main(
        [
            "bench",
            str(nano_artifacts.fp32_onnx),
            str(nano_artifacts.int8_onnx),
            "--backends",
            "onnxruntime",
            "--batch-sizes",
            "2",
            "--rounds",
            "1",
            "--min-time",
            "0",
            "--min-calls",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--no-baselines",
            "--out",
            str(tmp_path),
            "--stem",
            "nano",
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "vs ORT FP32" in out and "threads: 1" in out and "load average" in out
    report = json.loads((tmp_path / "nano.json").read_text())
    assert {t["kind"] for t in report["targets"]} == {
        "ort-fp32",
        "ort-fp32-plain",
        "ort-int8",
        "ort-int8-session",
        "ort-int8-plain",
    }
    assert (tmp_path / "nano.png").is_file()


def test_bench_without_a_checkpoint_leaves_torch_out(nano_artifacts, tmp_path):
    code = (
        "import sys; from pathlib import Path; from edgevit.bench import BenchConfig, run_bench;"
        f"run_bench(BenchConfig(artifacts=[Path({str(nano_artifacts.int8_onnx)!r})], backends=['onnxruntime'],"
        " batch_sizes=[1], rounds=1, min_time=0.0, min_calls=1, warmup=1, preprocess_rounds=1), progress=False);"
        "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_bad_configurations_are_one_line_errors(nano_artifacts, tmp_path):
    with pytest.raises(EdgeVitError, match="nothing to measure"):
        run_bench(BenchConfig(artifacts=[], **FAST), progress=False)
    with pytest.raises(BackendError, match="unknown bench backend"):
        run_bench(BenchConfig(artifacts=[nano_artifacts.int8_onnx], backends=["tvm"], **FAST), progress=False)
    with pytest.raises(EdgeVitError, match="does not exist"):
        run_bench(BenchConfig(artifacts=[tmp_path / "missing.onnx"], **FAST), progress=False)
    with pytest.raises(EdgeVitError, match="batch sizes"):
        BenchConfig(batch_sizes=[0])
    with pytest.raises(EdgeVitError, match="unknown bench target kind 'tvm'"):
        open_spec({"kind": "tvm", "path": str(nano_artifacts.int8_onnx)}, threads=1)
    with pytest.raises(EdgeVitError, match="two int8 models"):
        run_bench(
            BenchConfig(
                artifacts=[nano_artifacts.int8_onnx, nano_artifacts.int8_onnx], backends=["onnxruntime"], **FAST
            ),
            progress=False,
        )


def test_missing_model_path_in_cli_exits_2(tmp_path, capsys):
    from edgevit.cli import main

    assert main(["bench", str(Path(tmp_path) / "nope.onnx"), "-q", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_openvino_baselines_are_what_an_openvino_user_runs(nano_artifacts, tmp_path):
    """With OpenVINO installed, the bench adds OpenVINO running the FP32 ONNX with its own default
    hints and NNCF's INT8 of the same model (where NNCF is installed), and divides by both."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'edgevit[openvino]')")
    from edgevit.bench.variants import nncf_available

    cfg = BenchConfig(
        artifacts=[nano_artifacts.fp32_onnx, nano_artifacts.int8_onnx],
        backends=["openvino"],
        threads=1,
        workdir=tmp_path / "models",
        calib_images=4,
        **dict(FAST, batch_sizes=[2]),
    )
    r = run_bench(cfg, progress=False)
    by_kind = {t["kind"]: t for t in r["targets"]}
    assert {"ov-fp32-plain", "ov-int8", "ov-int8-auto"} <= set(by_kind)
    assert by_kind["ov-fp32-plain"]["backend"].startswith("openvino:CPU (plain compile_model")
    assert by_kind["ov-fp32-plain"]["precision"].startswith("fp32+")  # + the precision OpenVINO chose
    assert all(t["memory_error"] is None for t in r["targets"])  # each opens again in a fresh process
    ratios = {(x["numerator"], x["denominator"]) for x in r["ratios"]}
    assert ("ov-int8", "ov-fp32-plain") in ratios
    if nncf_available():
        assert by_kind["ov-int8-nncf"]["precision"].startswith("int8+")
        assert Path(by_kind["ov-int8-nncf"]["artifact"]).suffix == ".xml"
        assert ("ov-int8", "ov-int8-nncf") in ratios
    else:
        assert any("pip install nncf" in n for n in r["notes"])
