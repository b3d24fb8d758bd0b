"""Which build mode each TensorRT generation gets, device refusals, device detection from the
Jetson's files, and the trtexec equivalent: all without TensorRT."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgevit.engine.builder import BuildOptions, parse_batch, plan_build, trtexec_command
from edgevit.errors import BackendError, EdgeVitError, InputError
from edgevit.trt.device import DeviceInfo, JetsonInfo, check_request, jetpack_for_l4t, read_jetson_info
from edgevit.trt.trtapi import TrtVersion

V85, V86, V103, V1011, V1013, V114 = (
    TrtVersion.parse(v) for v in ("8.5.2", "8.6.2", "10.3.0", "10.11.0", "10.13.3", "11.4.0")
)
RTX = TrtVersion.parse("1.7.1", module="tensorrt_rtx")


@pytest.mark.parametrize(
    ("version", "precision", "qdq", "cache", "mode", "flags", "fp16_onnx"),
    [
        (V85, "best", True, False, "builder-flags", ["INT8", "FP16"], False),
        (V85, "int8", False, True, "implicit-int8", ["INT8"], False),
        (V85, "best", False, True, "implicit-int8", ["INT8", "FP16"], False),
        (V86, "fp16", False, False, "builder-flags", ["FP16"], False),
        (V103, "int8", True, False, "builder-flags", ["INT8"], False),
        (V1011, "fp32", False, False, "builder-flags", [], False),
        (V1013, "best", True, False, "strongly-typed", [], True),
        (V1013, "int8", True, False, "strongly-typed", [], False),
        (V1013, "fp16", False, False, "strongly-typed", [], True),
        (V114, "best", True, False, "strongly-typed", [], True),
        (V114, "fp32", False, False, "strongly-typed", [], False),
        (RTX, "best", True, False, "strongly-typed", [], True),
    ],
)
def test_mode_per_tensorrt_generation(version, precision, qdq, cache, mode, flags, fp16_onnx) -> None:
    plan = plan_build(precision, qdq, version, cache)
    assert (plan.mode, plan.builder_flags, plan.convert_fp16) == (mode, flags, fp16_onnx)


def test_default_precision() -> None:
    assert plan_build(None, True, V103, False).precision == "best"
    assert plan_build(None, False, V103, False).precision == "fp16"


@pytest.mark.parametrize(
    ("version", "precision", "qdq", "cache", "mode", "match"),
    [
        (V114, "int8", False, True, "auto", "no implicit INT8"),
        (V103, "int8", False, False, "auto", "needs --calib-cache"),
        (V103, "fp16", True, False, "auto", "is INT8"),
        (V103, "int8", True, True, "auto", "already has Q/DQ"),
        (V103, "fp16", False, True, "auto", "only used for"),
        (V85, "fp16", False, False, "strongly-typed", "no strongly typed"),
        (V114, "fp16", False, False, "builder-flags", "no precision builder flags"),
        (RTX, "fp16", False, False, "builder-flags", "no precision builder flags"),
    ],
)
def test_impossible_combinations_refused(version, precision, qdq, cache, mode, match) -> None:
    with pytest.raises(InputError, match=match):
        plan_build(precision, qdq, version, cache, mode)


def test_implicit_int8_deprecation_noted_on_10x() -> None:
    assert any("deprecated" in n for n in plan_build("int8", False, V103, True).notes)
    assert not plan_build("int8", False, V85, True).notes


NANO = DeviceInfo("NVIDIA Tegra X1", "5.3", JetsonInfo("NVIDIA Jetson Nano Developer Kit", "32.7.1", "4.6.1"))
XAVIER = DeviceInfo(
    "Xavier", "7.2", JetsonInfo("NVIDIA Jetson Xavier NX Developer Kit", "35.4.1", "5.1.2"), dla_cores=2
)
AGX_ORIN = DeviceInfo("Orin", "8.7", JetsonInfo("NVIDIA Jetson AGX Orin Developer Kit", "36.4.3", "6.2"), dla_cores=2)
ORIN_NANO = DeviceInfo("Orin", "8.7", JetsonInfo("NVIDIA Jetson Orin Nano Developer Kit", "36.4.3", "6.2"))
THOR = DeviceInfo("NVIDIA Thor", "11.0", JetsonInfo("NVIDIA Jetson AGX Thor Developer Kit", "38.2", "7.0"))


def test_int8_refused_on_jetson_nano() -> None:
    with pytest.raises(BackendError, match=r"no INT8 hardware.*--precision fp16"):
        check_request(NANO, "int8", None, V85)
    with pytest.raises(BackendError, match="no INT8"):
        check_request(NANO, "best", None, V85)
    check_request(NANO, "fp16", None, V85)  # FP16 is the Nano's ceiling


@pytest.mark.parametrize("device", [ORIN_NANO, THOR, NANO])
def test_dla_refused_where_there_is_none(device: DeviceInfo) -> None:
    with pytest.raises(BackendError, match="has no DLA"):
        check_request(device, "fp16", 0, V103 if device is not THOR else V1013)


def test_dla_rules_on_devices_that_have_one() -> None:
    check_request(AGX_ORIN, "int8", 1, V103)
    check_request(XAVIER, "fp16", 0, V85)
    with pytest.raises(BackendError, match="must be below 2"):
        check_request(AGX_ORIN, "int8", 2, V103)
    with pytest.raises(BackendError, match="only FP16 and INT8"):
        check_request(AGX_ORIN, "fp32", 0, V103)
    with pytest.raises(BackendError, match="removed in TensorRT 11"):
        check_request(AGX_ORIN, "int8", 0, V114)
    with pytest.raises(InputError):
        check_request(AGX_ORIN, "int8", -1, V103)


def test_jetson_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
    )
    info = read_jetson_info(tmp_path)
    assert info == JetsonInfo("NVIDIA Jetson AGX Orin Developer Kit", "36.4.3", "6.2")
    assert info.family == "orin"
    assert read_jetson_info(tmp_path / "nothing") is None


@pytest.mark.parametrize(
    ("l4t", "jetpack"),
    [("32.7.1", "4.6.1"), ("35.2.1", "5.1"), ("35.4.1", "5.1.2"), ("36.3.0", "6.0"), ("36.4.3", "6.2"), ("99.1", "")],
)
def test_l4t_to_jetpack(l4t: str, jetpack: str) -> None:
    assert jetpack_for_l4t(l4t) == jetpack


def test_device_families_and_capabilities() -> None:
    assert not NANO.has_int8 and NANO.has_fp16 and not NANO.dla_possible
    assert AGX_ORIN.has_int8 and AGX_ORIN.dla_possible
    assert not ORIN_NANO.dla_possible and ORIN_NANO.jetson.family == "orin-nano"
    assert THOR.jetson.family == "thor" and not THOR.dla_possible
    assert not DeviceInfo("Jetson TX2", "6.2").has_int8
    assert DeviceInfo.from_dict(AGX_ORIN.to_dict()) == AGX_ORIN


def test_parse_batch() -> None:
    assert parse_batch("1:8:32") == (1, 8, 32)
    assert parse_batch("16") == (1, 16, 16)
    for bad in ("8:1:32", "0:1:2", "a:b:c", "1:2"):
        with pytest.raises(InputError):
            parse_batch(bad)


def test_trtexec_equivalents(tmp_path: Path) -> None:
    opts = BuildOptions(onnx=tmp_path / "m.onnx", batch=(1, 4, 16), workspace_mib=512, opt_level=3, dla_core=0)
    implicit = plan_build("best", False, V85, True)
    cmd = trtexec_command(
        implicit, opts.onnx, tmp_path / "m.engine", "images", (1, 8, 8), opts, calib_cache=tmp_path / "c.cache"
    )
    for part in (
        "--int8",
        "--fp16",
        f"--calib={tmp_path / 'c.cache'}",
        "--minShapes=images:1x1x8x8",
        "--optShapes=images:4x1x8x8",
        "--maxShapes=images:16x1x8x8",
        "--memPoolSize=workspace:512",
        "--builderOptimizationLevel=3",
        "--useDLACore=0",
        "--allowGPUFallback",
    ):
        assert part in cmd.split(), part
    strong = plan_build("best", True, V114, False)
    cmd = trtexec_command(strong, opts.onnx, tmp_path / "m.engine", "images", (1, 8, 8), opts)
    assert "--stronglyTyped" in cmd.split() and "--int8" not in cmd.split() and "--fp16" not in cmd.split()


def test_options_validated(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        BuildOptions(onnx=tmp_path / "m.onnx", precision="int4")
    with pytest.raises(InputError):
        BuildOptions(onnx=tmp_path / "m.onnx", opt_level=9)
    with pytest.raises(InputError):
        BuildOptions(onnx=tmp_path / "m.onnx", workspace_mib=1)


def test_cli_registers_build(tmp_path: Path) -> None:
    """`edgevit build` parses its options; a missing ONNX is a one-line EdgeVitError and writes nothing."""
    from edgevit.engine.cli import register

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    register(sub)
    engines = tmp_path / "engines"
    args = parser.parse_args(
        [
            "build",
            str(tmp_path / "missing.onnx"),
            "--precision",
            "int8",
            "--batch",
            "1:4:8",
            "--engines-dir",
            str(engines),
        ]
    )
    assert args.func.__name__ == "handler"
    with pytest.raises(EdgeVitError, match="does not exist") as err:
        args.func(args)
    assert "\n" not in str(err.value)
    assert not engines.exists()


def test_print_trtexec_without_tensorrt(nano_variants, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`edgevit build --print-trtexec --trt-version 8.5.2` works on a machine without TensorRT and
    prepares what the command reads: a calibration cache whose header names TensorRT 8.5.2."""
    from edgevit.engine.cli import register
    from edgevit.quant.table import read_trt_cache

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    engines = tmp_path / "engines"
    args = parser.parse_args(
        [
            "build",
            str(nano_variants.fp32_onnx),
            "--precision",
            "int8",
            "--calib-cache",
            str(nano_variants.trt_cache),
            "--print-trtexec",
            "--trt-version",
            "8.5.2",
            "--engines-dir",
            str(engines),
        ]
    )
    assert args.func(args) == 0
    cmd = capsys.readouterr().out.strip().split()
    assert cmd[0] == "trtexec" and "--int8" in cmd and "--stronglyTyped" not in cmd
    calib = Path(next(c for c in cmd if c.startswith("--calib=")).removeprefix("--calib="))
    assert read_trt_cache(calib)[0] == "TRT-8502-EntropyCalibration2"
    assert not any(engines.glob("*.engine"))  # nothing built
    args = parser.parse_args(
        [
            "build",
            str(nano_variants.int8_onnx),
            "--print-trtexec",
            "--trt-version",
            "11.4.0",
            "--engines-dir",
            str(engines),
        ]
    )
    assert args.func(args) == 0
    cmd = capsys.readouterr().out.strip().split()
    assert "--stronglyTyped" in cmd and "--int8" not in cmd
    onnx_arg = Path(next(c for c in cmd if c.startswith("--onnx=")).removeprefix("--onnx="))
    assert onnx_arg.name.endswith(".fp16.onnx") and onnx_arg.is_file()  # best = INT8 + FP16 rest
