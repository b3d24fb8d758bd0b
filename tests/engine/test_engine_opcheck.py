"""`edgevit build --check`: which TensorRT (per JetPack) parses an ONNX, from onnx-tensorrt's
operator tables, before the model reaches a device."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import TensorProto, helper

from edgevit.engine.opcheck import JETPACK_TENSORRT, check_graph, check_targets, load_table, table_for, table_labels
from edgevit.errors import ArtifactError, BackendError
from edgevit.trt.trtapi import TrtVersion


@pytest.mark.parametrize(
    ("version", "table"),
    [
        ("8.5.2", "8.5"),
        ("8.6.2", "8.6"),
        ("10.3.0", "10.1"),
        ("10.13.3", "10.1"),
        ("10.16.0", "10.16"),
        ("11.4.1", "11.1"),
    ],
)
def test_which_table_stands_for_which_release(version: str, table: str) -> None:
    assert table_for(TrtVersion.parse(version)) == table


def test_tables_carry_their_source_and_opset_range() -> None:
    assert table_labels() == ["8.5", "8.6", "10.0", "10.1", "10.16", "11.1"]
    for label, lo, hi in (("8.5", 1, 17), ("8.6", 1, 17), ("10.1", 9, 20), ("11.1", 9, 24)):
        t = load_table(label)
        assert (t.opset_min, t.opset_max) == (lo, hi) and "onnx/onnx-tensorrt" in t.source
    assert not load_table("8.5").ops["LayerNormalization"].supported
    assert load_table("8.6").ops["LayerNormalization"].supported
    assert "Gelu" not in load_table("8.6").ops and load_table("10.1").ops["Gelu"].supported


@pytest.mark.parametrize("source", ["fp32", "int8"])
def test_every_jetpack_parses_what_edgevit_build_gives_it(nano_variants: SimpleNamespace, source: str) -> None:
    model = onnx.load(str(nano_variants.fp32_onnx if source == "fp32" else nano_variants.int8_onnx))
    checks = check_targets(model, is_qdq=source == "int8")
    assert [c.target.split(",")[0] for c in checks] == [f"JetPack {jp}" for jp, _ in JETPACK_TENSORRT]
    assert all(c.ok for c in checks), [c.line() for c in checks]
    jp5 = checks[0]
    assert "decomposes 9 LayerNormalization" in jp5.line() and "parses" in jp5.line()
    assert "(table of 10.1)" in checks[2].line()  # JetPack 6.1: TensorRT 10.3 read from 10.1-GA's table


def test_a_graph_old_parsers_cannot_read(nano_variants: SimpleNamespace) -> None:
    """Gelu (opset 20) has an importer from 10.0; an opset-20 graph is beyond 8.x's documented range."""
    node = helper.make_node("Gelu", ["images"], ["logits"], name="gelu")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    assert check_graph(model, load_table("8.6")) == [
        "opset 20 is outside 1..17",
        "Gelu (x1) is not in the operator table",
    ]
    assert check_graph(model, load_table("10.1")) == []
    checks = {c.version.text: c for c in check_targets(model, is_qdq=False, precision="fp32")}
    assert not checks["8.5.2"].ok and not checks["8.6.2"].ok and checks["10.3.0"].ok and checks["11.4.1"].ok
    assert "does NOT parse" in checks["8.6.2"].line()


def _run(args: list[str]) -> int:
    from edgevit.engine.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    ns = parser.parse_args(["build", *args])
    return ns.func(ns)


def test_check_without_tensorrt_says_to_install_tensorrt_rtx(nano_variants, monkeypatch, capsys, tmp_path) -> None:
    """#15: without TensorRT the table still answers, and the hint names what works on a PC."""
    from edgevit.trt import trtapi

    def missing(**kw):
        raise BackendError(f"TensorRT is not importable (tensorrt_rtx: No module named 'tensorrt_rtx'); {kw['hint']}")

    monkeypatch.setattr(trtapi, "import_tensorrt", missing)
    assert _run([str(nano_variants.int8_onnx), "--check", "--engines-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count(": parses") == len(JETPACK_TENSORRT) and "JetPack 5.1, TensorRT 8.5.2" in out
    assert "pip install tensorrt-rtx" in out and "python3-libnvinfer" in out
    assert "pip install tensorrt`" not in out


def test_check_for_one_release_fails_when_it_cannot_parse(tmp_path, monkeypatch, capsys, nano_variants) -> None:
    from edgevit.engine import opcheck
    from edgevit.trt import trtapi

    monkeypatch.setattr(trtapi, "import_tensorrt", lambda **kw: (_ for _ in ()).throw(BackendError("none")))
    real = opcheck.check_graph
    monkeypatch.setattr(
        opcheck, "check_graph", lambda m, t: real(m, t) + (["Foo (x1) is not supported"] if t.label == "8.6" else [])
    )
    with pytest.raises(ArtifactError, match=r"TensorRT 8\.6\.2 cannot parse .*Foo"):
        _run([str(nano_variants.fp32_onnx), "--check", "--trt-version", "8.6.2"])
    assert _run([str(nano_variants.fp32_onnx), "--check", "--trt-version", "10.3.0"]) == 0
    assert "TensorRT 10.3.0 (table of 10.1): parses" in capsys.readouterr().out


def test_check_refuses_what_build_would_refuse(nano_variants) -> None:
    model = onnx.load(str(nano_variants.int8_onnx))
    checks = check_targets(model, is_qdq=True, precision="fp16")
    assert not any(c.ok for c in checks) and "is INT8" in checks[0].problems[0]
    assert Path(nano_variants.int8_onnx).is_file()
