"""The trtexec command per TensorRT release, and ``--print-trtexec`` on a machine without
TensorRT: it prepares what the command reads (the LayerNorm-decomposed ONNX for 8.5, the
retagged calibration cache, the FP16 ONNX) at the paths a build uses."""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
import pytest

from edgevit.engine.modes import choose_setup
from edgevit.engine.opcheck import check_graph, load_table
from edgevit.engine.options import BuildOptions
from edgevit.engine.paths import resolve_paths, timing_cache_path
from edgevit.engine.trtexec import trtexec_command
from edgevit.errors import InputError
from edgevit.quant.table import read_trt_cache
from edgevit.trt.trtapi import TrtVersion

V82, V85, V86, V103, V114 = (TrtVersion.parse(v) for v in ("8.2.1", "8.5.2", "8.6.2", "10.3.0", "11.4.1"))


def _cmd(version: TrtVersion, precision: str, qdq: bool, cache: bool, tmp_path: Path, **kw: object) -> list[str]:
    kw.setdefault("batch_profile", (1, 4, 16))
    opts = BuildOptions(onnx=tmp_path / "m.onnx", engines_dir=tmp_path / "e", **kw)
    setup = choose_setup(precision, qdq, version, cache, opts.mode)
    paths = resolve_paths(opts, setup, version, None)
    return trtexec_command(setup, paths, version, "images", (1, 8, 8), opts, ["ln:0", "sm"]).split()


def test_options_per_release(tmp_path: Path) -> None:
    cmd = _cmd(V85, "best", False, True, tmp_path, workspace_mib=512, dla_core=0, batch_profile=(4, 4, 4))
    for part in ("--int8", "--fp16", "--memPoolSize=workspace:512", "--useDLACore=0", "--allowGPUFallback"):
        assert part in cmd, part
    assert "--precisionConstraints=prefer" in cmd and "--layerPrecisions=ln:0:fp32,sm:fp32" in cmd
    assert any(c.startswith("--calib=") and c.endswith(".calib.cache") for c in cmd)
    assert not any(c.startswith(("--builderOptimizationLevel", "--stronglyTyped")) for c in cmd)
    with pytest.raises(InputError, match=r"TensorRT 8\.6\+"):
        _cmd(V85, "fp16", False, False, tmp_path, opt_level=3)  # 8.5's trtexec has no such option
    assert "--builderOptimizationLevel=3" in _cmd(V86, "fp16", False, False, tmp_path, opt_level=3)
    assert "--workspace=512" in _cmd(V82, "fp16", False, False, tmp_path, workspace_mib=512)  # before 8.4
    cmd = _cmd(V103, "best", True, False, tmp_path)
    assert "--int8" in cmd and "--stronglyTyped" not in cmd  # 10.3: builder flags
    strong = _cmd(V103, "best", True, False, tmp_path, mode="strongly-typed")
    assert "--stronglyTyped" in strong and "--int8" not in strong and "--precisionConstraints=prefer" not in strong
    cmd = _cmd(V114, "best", True, False, tmp_path)
    assert not any(c in cmd for c in ("--stronglyTyped", "--int8", "--fp16", "--precisionConstraints=prefer"))
    assert "--minShapes=images:1x1x8x8" in cmd and "--maxShapes=images:16x1x8x8" in cmd


def test_timing_cache_names(tmp_path: Path) -> None:
    from edgevit.trt.device import DeviceInfo

    orin = DeviceInfo("Orin", "8.7")
    assert timing_cache_path(tmp_path, V103, orin).name == "trt10.3.0-orin-sm8.7.cache"
    assert timing_cache_path(tmp_path, V103, None).name == "trt10.3.0.cache"


def _print(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    from edgevit.engine.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    ns = parser.parse_args(["build", *args])
    assert ns.func(ns) == 0
    return capsys.readouterr().out.strip().split()


def _value(cmd: list[str], name: str) -> str:
    return next(c for c in cmd if c.startswith(name + "=")).split("=", 1)[1]


def _arg(cmd: list[str], name: str) -> Path:
    return Path(_value(cmd, name))


def test_print_trtexec_for_jetpack_5(nano_variants, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TensorRT 8.5 gets the LayerNorm-decomposed ONNX, FP32 pins on it, and no 8.6+ option."""
    engines = tmp_path / "engines"
    cmd = _print(
        [str(nano_variants.int8_onnx), "--print-trtexec", "--trt-version", "8.5.2", "--engines-dir", str(engines)],
        capsys,
    )
    assert cmd[0] == "trtexec" and "--int8" in cmd and "--fp16" in cmd and "--stronglyTyped" not in cmd
    parsed = _arg(cmd, "--onnx")
    assert parsed.name.endswith(".ln-decomposed.onnx") and parsed.parent == engines and parsed.is_file()
    assert check_graph(onnx.load(str(parsed)), load_table("8.5")) == []
    pins = _value(cmd, "--layerPrecisions").split(",")
    assert any("/ln_decomposed/Pow:fp32" in p for p in pins) and any("Softmax" in p for p in pins)
    assert not any(c.startswith("--builderOptimizationLevel") for c in cmd)
    assert not any(engines.glob("*.engine"))  # nothing built


@pytest.mark.parametrize(("version", "tag"), [("8.5.2", "TRT-8502-"), ("10.3.0", "TRT-100300-")])
def test_print_trtexec_retags_the_cache(nano_variants, tmp_path, capsys, version: str, tag: str) -> None:
    """The cache the line names carries the target's own header (10.x: MAJOR*10000 numbering)."""
    cmd = _print(
        [
            str(nano_variants.fp32_onnx),
            "--precision",
            "int8",
            "--calib-cache",
            str(nano_variants.trt_cache),
            "--print-trtexec",
            "--trt-version",
            version,
            "--engines-dir",
            str(tmp_path / "engines"),
        ],
        capsys,
    )
    calib = _arg(cmd, "--calib")
    assert calib.parent == tmp_path / "engines" and read_trt_cache(calib)[0] == tag + "EntropyCalibration2"


def test_print_trtexec_for_tensorrt_11(nano_variants, tmp_path, capsys) -> None:
    cmd = _print(
        [str(nano_variants.int8_onnx), "--print-trtexec", "--trt-version", "11.4.1", "--engines-dir", str(tmp_path)],
        capsys,
    )
    assert "--int8" not in cmd and "--stronglyTyped" not in cmd  # 11.x: always strongly typed, flags gone
    onnx_arg = _arg(cmd, "--onnx")
    assert onnx_arg.name.endswith(".fp16.onnx") and onnx_arg.is_file()  # best = INT8 + FP16 rest


def test_print_trtexec_without_tensorrt_needs_the_version(nano_variants, tmp_path, monkeypatch) -> None:
    from edgevit.engine import trtexec
    from edgevit.errors import BackendError

    def missing(**kw):
        raise BackendError("TensorRT is not importable")

    monkeypatch.setattr(trtexec, "import_tensorrt", missing)
    with pytest.raises(InputError, match=r"--trt-version .*8\.5\.2 on JetPack 5\.1"):
        trtexec.print_trtexec(BuildOptions(onnx=nano_variants.int8_onnx, engines_dir=tmp_path))
