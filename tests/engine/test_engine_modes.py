"""Which build mode each TensorRT generation gets, the options a build accepts, and the
`edgevit build` command line: all without TensorRT."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgevit.engine.modes import choose_setup
from edgevit.engine.options import BuildOptions, parse_batch_profile
from edgevit.errors import EdgeVitError, InputError
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
    setup = choose_setup(precision, qdq, version, cache)
    assert (setup.mode, setup.builder_flags, setup.convert_fp16) == (mode, flags, fp16_onnx)


def test_layernorm_is_decomposed_only_below_8_6() -> None:
    assert choose_setup("fp16", False, V85, False).decompose_layernorm
    assert any("LayerNormalization" in n for n in choose_setup("best", True, V85, False).notes)
    for version in (V86, V103, V1013, V114, RTX):
        assert not choose_setup("fp16", False, version, False).decompose_layernorm


def test_fp32_pins_only_where_builder_flags_lower_precision() -> None:
    """Builder flags with FP16/INT8 pin LayerNorm/Softmax to FP32; FP32 builds and strongly typed ones need no pins."""
    assert choose_setup("fp16", False, V103, False).constrain_fp32
    assert choose_setup("best", True, V85, False).constrain_fp32
    assert choose_setup("int8", False, V103, True).constrain_fp32  # implicit INT8 too
    assert not choose_setup("fp32", False, V103, False).constrain_fp32
    assert not choose_setup("best", True, V1013, False).constrain_fp32  # the FP16 conversion keeps them FP32


def test_default_precision() -> None:
    assert choose_setup(None, True, V103, False).precision == "best"
    assert choose_setup(None, False, V103, False).precision == "fp16"


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
        choose_setup(precision, qdq, version, cache, mode)


def test_implicit_int8_deprecation_noted_on_10x() -> None:
    assert any("deprecated" in n for n in choose_setup("int8", False, V103, True).notes)
    assert not any("deprecated" in n for n in choose_setup("int8", False, V85, True).notes)


def test_parse_batch_profile() -> None:
    assert parse_batch_profile("1:8:32") == (1, 8, 32)
    assert parse_batch_profile("16") == (1, 16, 16)
    for bad in ("8:1:32", "0:1:2", "a:b:c", "1:2"):
        with pytest.raises(InputError, match="--batch-profile"):
            parse_batch_profile(bad)


def test_options_validated(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        BuildOptions(onnx=tmp_path / "m.onnx", precision="int4")
    with pytest.raises(InputError):
        BuildOptions(onnx=tmp_path / "m.onnx", opt_level=9)
    with pytest.raises(InputError):
        BuildOptions(onnx=tmp_path / "m.onnx", workspace_mib=1)
    with pytest.raises(InputError, match=r"\.engine or \.plan"):
        BuildOptions(onnx=tmp_path / "m.onnx", output=tmp_path / "m.trt")


def test_dla_needs_a_static_batch(tmp_path: Path) -> None:
    """TensorRT's DLA rules: min = opt = max; a dynamic profile would move everything to the GPU."""
    with pytest.raises(InputError, match=r"static batch.*--batch-profile 8:8:8"):
        BuildOptions(onnx=tmp_path / "m.onnx", dla_core=0)  # the default 1:8:32
    with pytest.raises(InputError, match="static batch"):
        BuildOptions(onnx=tmp_path / "m.onnx", dla_core=0, batch_profile=(1, 1, 4))
    assert BuildOptions(onnx=tmp_path / "m.onnx", dla_core=1, batch_profile=(4, 4, 4)).dla_core == 1
    with pytest.raises(InputError, match="0 or more"):
        BuildOptions(onnx=tmp_path / "m.onnx", dla_core=-1, batch_profile=(4, 4, 4))


def _parser() -> argparse.ArgumentParser:
    from edgevit.engine.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser


def test_cli_registers_build(tmp_path: Path) -> None:
    """`edgevit build` parses its options; a missing ONNX is a one-line EdgeVitError and writes nothing."""
    engines = tmp_path / "engines"
    args = _parser().parse_args(
        [
            "build",
            str(tmp_path / "missing.onnx"),
            "--precision",
            "int8",
            "--batch-profile",
            "1:4:8",
            "--range-table",
            str(tmp_path / "t.json"),
            "--engines-dir",
            str(engines),
        ]
    )
    assert args.func.__name__ == "handler" and args.batch_profile == "1:4:8" and args.range_table.name == "t.json"
    with pytest.raises(EdgeVitError, match="does not exist") as err:
        args.func(args)
    assert "\n" not in str(err.value)
    assert not engines.exists()


def test_old_flag_names_are_gone() -> None:
    """One meaning per flag: --batch-size is images per call elsewhere; --calib-table means quantize's table."""
    for old in ("--batch", "--calib-table"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["build", "m.onnx", old, "x"])
