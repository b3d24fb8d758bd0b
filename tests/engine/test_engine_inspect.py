"""Reading back the engine inspector: layer precisions from TensorRT 8.x/10.x JSON (trex's
example, shipped unchanged in NVIDIA/TensorRT release/8.5 through release/10.16) and the
11.x schema (``I/O Tensors``; ``Format/DataType`` split per the 11.x migration guide), the
precision check, and where a DLA build put its layers (inspector and builder log)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevit.engine.inspect import check_precision, dla_from_log, dla_regions, summarize
from edgevit.errors import BackendError

FIXTURES = Path(__file__).resolve().parents[1] / "trt" / "fixtures"


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _layer(name: str, fmt_in: str, fmt_out: str, ltype: str = "CaskGemmMatrixMultiply") -> dict[str, object]:
    return {
        "Name": name,
        "LayerType": ltype,
        "Inputs": [{"Name": "a", "Format/Datatype": fmt_in}],
        "Outputs": [{"Name": "b", "Format/Datatype": fmt_out}],
    }


def _layer_11(name: str, dtype_in: str, dtype_out: str, key: str = "DataType") -> dict[str, object]:
    return {
        "Name": name,
        "LayerType": "CaskGemmMatrixMultiply",
        "Inputs": [{"Name": "a", "Dimensions": [1, 64], "Format": "Row major linear", key: dtype_in}],
        "Outputs": [{"Name": "b", "Dimensions": [1, 64], "Format": "Row major linear", key: dtype_out}],
    }


def test_real_8x_10x_detailed_json() -> None:
    """trex's mobilenet QAT engine (TensorRT 8.x DETAILED; the file NVIDIA still ships at release/10.16)."""
    s = summarize(_fixture("inspector-8.x.json"))
    assert s["detailed"] == 7 and s["schema"].startswith("8.x/10.x")
    assert s["by_precision"] == {"INT8": 4, "FP16": 2, "FP32": 1}
    assert s["io"] == [{"name": "input1"}, {"name": "1179"}]
    assert "4 INT8" in check_precision(s, "int8", strongly_typed=False)
    assert "2 FP16" in check_precision(s, "fp16", strongly_typed=False)


@pytest.mark.parametrize("name", ["inspector-8.x-names-only.json", "inspector-10.x-names-only.json"])
def test_names_only_json_is_an_error(name: str) -> None:
    s = summarize(_fixture(name))
    assert s["detailed"] == 0 and s["by_precision"]["unknown"] == s["layers"] > 0
    with pytest.raises(BackendError, match="DETAILED"):
        check_precision(s, "int8", strongly_typed=True)


def test_11x_io_tensors_are_read() -> None:
    """NVIDIA's migration guide example: Bindings became I/O Tensors objects."""
    s = summarize(_fixture("inspector-11.x.json"))
    assert s["schema"].startswith("11.x")
    assert s["io"] == [
        {"name": "input_0", "mode": "Input", "dtype": "Float"},
        {"name": "output_0", "mode": "Output", "dtype": "Float"},
    ]


@pytest.mark.parametrize("key", ["DataType", "Datatype"])
def test_11x_split_format_and_datatype(key: str) -> None:
    """An 11.x INT8 engine is recognised (today's reader saw no precision there and refused it)."""
    info = {
        "Layers": [
            _layer_11("q", "Float", "Int8", key),
            _layer_11("mm", "Int8", "Half", key),
            _layer_11("ln", "Float", "Float", key),
        ],
        "I/O Tensors": [{"Name": "images", "IOMode": "Input", "DataType": "Float"}],
    }
    s = summarize(json.dumps(info))
    assert s["by_precision"] == {"INT8": 2, "FP32": 1}
    assert "2 INT8" in check_precision(s, "best", strongly_typed=True)
    fp32_only = summarize({"Layers": [_layer_11("x", "Float", "Float", key)] * 3, "I/O Tensors": []})
    with pytest.raises(BackendError, match="without any INT8 layer"):
        check_precision(fp32_only, "int8", strongly_typed=True)


def test_unknown_schema_is_neither_proof_nor_refusal() -> None:
    """Layers whose tensors carry no data-type key we know: recorded as unverified, never passed as checked."""
    odd = {"Layers": [{"Name": "x", "LayerType": "Gemm", "Inputs": [{"Name": "a", "Precision": "INT8"}]}]}
    s = summarize(odd)
    assert s["by_precision"] == {"unreadable": 1}
    assert check_precision(s, "int8", strongly_typed=False).startswith("unverified: 1 of 1 layer(s)")
    assert check_precision(s, "int8", strongly_typed=True).startswith("strongly typed graph")


def test_precision_words_of_every_version() -> None:
    s = summarize(
        {
            "Layers": [
                _layer("a", "BFloat16", "BFloat16"),
                _layer("b", "Half", "Half"),
                _layer("c", "Row major linear FP32", "Float"),
            ]
        }
    )
    assert s["by_precision"] == {"BF16": 1, "FP16": 1, "FP32": 1}  # BFloat16 is not FP32


def test_silent_fp32_fallback_fails_the_build() -> None:
    """Weak typing can fall back to FP32: an engine whose visible layers are all FP32 is refused."""
    s = summarize({"Layers": [_layer("a", "Row major linear FP32", "Row major linear FP32")] * 3})
    with pytest.raises(BackendError, match="without any INT8 layer"):
        check_precision(s, "int8", strongly_typed=False)
    assert check_precision(s, "fp32", strongly_typed=False).startswith("not needed")


def test_myelin_regions_are_opaque() -> None:
    s = summarize(
        {"Layers": [_layer("{ForeignNode[/blocks...]}", "Row major linear FP32", "Row major linear FP32", "Myelin")]}
    )
    assert s["opaque"] == 1 and s["dla_regions"] == 0  # a GPU Myelin region, not a DLA one
    assert check_precision(s, "best", strongly_typed=True).startswith("strongly typed graph")
    assert check_precision(s, "best", strongly_typed=False).startswith("unverified")


def test_dla_regions_in_the_inspector() -> None:
    """A DLA loadable is a ForeignNode fed through '<tensor> to nvm' copies (trtexec profiles show it so)."""
    to_nvm = {
        "Name": "images to nvm",
        "LayerType": "Reformat",
        "Inputs": [{"Name": "images"}],
        "Outputs": [{"Name": "images_nvm"}],
    }
    dla = {"Name": "{ForeignNode[/patch_embed/Conv]}", "LayerType": "DLA", "Inputs": [{"Name": "images_nvm"}]}
    gpu = {"Name": "{ForeignNode[/blocks.0...]}", "LayerType": "Myelin", "Inputs": [{"Name": "x"}]}
    assert dla_regions([to_nvm, dla, gpu]) == 1
    names = ["images to nvm", "{ForeignNode[Conv_0...Concat_198]}", "head_3 from nvm", "{ForeignNode[MatMul]}"]
    assert dla_regions(names) == 1


def test_dla_placement_from_the_builder_log() -> None:
    log_84 = [
        "---------- Layers Running on DLA ----------",
        "[DlaLayer] {ForeignNode[conv1_1...pool5]}",
        "[DlaLayer] {ForeignNode[relu6...fc8]}",
        "---------- Layers Running on GPU ----------",
        "[GpuLayer] SHUFFLE: shuffle_between_pool5_and_fc6",
        "[GpuLayer] SOFTMAX: prob",
    ]
    assert dla_from_log(log_84) == {"dla_subgraphs": 2, "gpu_layers": 2}
    log_7 = [
        "--------------- Layers running on DLA: ",
        "{Tanh_3,Mul_4,Conv_5}, {Tanh_8,Mul_9},",
        "--------------- Layers running on GPU: ",
        "Conv_0, 2253[Constant], Softplus_2",
    ]
    assert dla_from_log(log_7) == {"dla_subgraphs": 2, "gpu_layers": 3}
    assert dla_from_log(["[W] something else"]) is None
