"""TensorRT's own ONNX parser and builder on every ONNX variant the pipeline produces.

These tests use ``tensorrt-rtx`` (TensorRT for RTX, from PyPI), which parses ONNX with the
same ONNX parser as TensorRT and builds engines on a CPU-only machine. **They prove the
graph, not the device engine**: that TensorRT accepts our FP32, FP16, INT8 Q/DQ and
LayerNorm-decomposed graphs and can build from them, and that the builder-flags branch's
config, profile, timing cache and FP32 layer selection work on real TensorRT objects (its
precision flags and layer pins do not exist in TensorRT-RTX: tests/engine/test_engine_versions.py
runs those against each release's API). They do not run the engine (no GPU) and do not
target a Jetson; the ``gpu`` tests in ``tests/runtime/test_trt_backend.py`` do that on a device.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgevit.engine.build import build_engine
from edgevit.engine.options import BuildOptions
from edgevit.errors import ArtifactError, QuantizationError
from edgevit.trt.manifest import load_manifest, manifest_path

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx") is None,
    reason="tensorrt-rtx is not installed (`pip install tensorrt-rtx`: TensorRT's ONNX parser and builder on CPU)",
)

VARIANTS = [("fp32", "fp32"), ("fp32", "fp16"), ("int8", "int8"), ("int8", "best")]


def _build(src: Path, precision: str, engines: Path, write: bool = True, **kw: object):
    opts = BuildOptions(onnx=src, precision=precision, engines_dir=engines, allow_rtx=True, prefer_rtx=True, **kw)
    return build_engine(opts, write=write)


def _check_result(result, variants: SimpleNamespace, precision: str) -> None:
    assert result.setup.mode == "strongly-typed"  # TensorRT-RTX, like TensorRT 11, has no weak typing
    assert result.engine_size > 10_000
    assert result.engine is not None and result.engine.is_file()
    m = load_manifest(result.engine)  # sha256 and size match the engine written
    assert m.precision == precision
    assert m.tensorrt_module == "tensorrt_rtx"
    assert [t.name for t in m.io] == ["images", "logits"]
    assert m.io[0].shape[0] == -1 and m.io[0].dtype == "float32" and m.io[1].dtype == "float32"
    assert m.artifact.class_names and m.artifact.preprocess.size == m.io[0].shape[2]
    if precision in ("fp16", "best"):
        assert m.fp16_conversion["casts_added"] > 0
        kept = Path(m.built_from)
        assert kept.name.endswith(".fp16.onnx") and kept.parent == result.engine.parent and kept.is_file()


@pytest.mark.parametrize(("source", "precision"), VARIANTS)
def test_nano_variants_parse_and_build(
    nano_variants: SimpleNamespace, tmp_path: Path, source: str, precision: str
) -> None:
    """nano FP32 / FP16 / INT8 Q/DQ / INT8+FP16: TensorRT's parser accepts the graph and an engine builds."""
    src = nano_variants.fp32_onnx if source == "fp32" else nano_variants.int8_onnx
    result = _build(src, precision, tmp_path / "engines")
    _check_result(result, nano_variants, precision)


@pytest.mark.parametrize(("source", "precision"), VARIANTS)
def test_tiny_variants_parse_and_build(
    tiny_variants: SimpleNamespace, tmp_path: Path, source: str, precision: str
) -> None:
    """DeiT-Tiny shape (224 px, 12 blocks, random weights): same as nano, at the size users deploy."""
    src = tiny_variants.fp32_onnx if source == "fp32" else tiny_variants.int8_onnx
    result = _build(src, precision, tmp_path / "engines")
    _check_result(result, tiny_variants, precision)


def test_parser_errors_are_reported_node_by_node(tmp_path: Path) -> None:
    """A graph TensorRT rejects (asymmetric zero point) fails with the parser's own error, naming the node."""
    src = _bad_qdq_model(tmp_path / "asym.onnx", zero_point=3)
    engines = tmp_path / "engines"
    for precision in ("int8", "best"):  # best: the FP16 conversion runs first, in a scratch folder
        with pytest.raises(ArtifactError) as err:
            _build(src, precision, engines, check_qdq=False)  # skip our static check: reach the parser
        msg = str(err.value)
        assert "rejected" in msg and "'q_in'" in msg and "QuantizeLinear" in msg and "zero point" in msg.lower()
        assert "\n" not in msg
    assert not engines.exists() or not any(engines.iterdir())  # nothing half-written under engines/


def test_int32_bias_dq_rejected_by_parser(tmp_path: Path) -> None:
    """ONNX Runtime's default INT32 bias quantization is refused by TensorRT's parser (field notes, section 1)."""
    src = _bad_qdq_model(tmp_path / "bias.onnx", zero_point=0, int32_bias=True)
    with pytest.raises(ArtifactError, match="dq_bias"):
        _build(src, "int8", tmp_path / "engines", check_qdq=False)


def test_static_qdq_check_runs_before_the_parser(tmp_path: Path) -> None:
    """With the pre-flight on (default), our Q/DQ rules catch the same model with a one-line QuantizationError."""
    src = _bad_qdq_model(tmp_path / "asym.onnx", zero_point=3)
    with pytest.raises(QuantizationError, match="nonzero zero point"):
        _build(src, "int8", tmp_path / "engines")


def test_dry_build_writes_nothing(nano_variants: SimpleNamespace, tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    result = _build(nano_variants.int8_onnx, "int8", engines, write=False)
    assert result.engine is None and result.engine_size > 0
    assert not engines.exists() or not any(engines.rglob("*.engine"))


def test_manifest_carries_source_facts(nano_variants: SimpleNamespace, tmp_path: Path) -> None:
    from edgevit.artifacts import read_onnx_info, sha256_file

    result = _build(nano_variants.int8_onnx, "best", tmp_path / "engines")
    data = json.loads(manifest_path(result.engine).read_text())
    info = read_onnx_info(nano_variants.int8_onnx)
    assert data["source_sha256"] == sha256_file(nano_variants.int8_onnx)
    assert data["artifact"]["class_names"] == info.class_names
    assert data["artifact"]["preprocess"]["mean"] == list(info.preprocess.mean)
    assert data["profile"] == {
        "min": [1, *info.preprocess.input_shape],
        "opt": [8, *info.preprocess.input_shape],
        "max": [32, *info.preprocess.input_shape],
    }
    assert data["build_mode"] == "strongly-typed" and data["built_at"].endswith("+00:00")
    assert "edgevit build" in data["rebuild_command"] and "--precision best" in data["rebuild_command"]
    assert "--batch-profile 1:8:32" in data["rebuild_command"]


def _bad_qdq_model(path: Path, zero_point: int, int32_bias: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgevit.artifacts import ArtifactInfo
    from edgevit.config import ViTConfig
    from edgevit.preprocess import Preprocess

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.integers(-5, 5, (64, 10)).astype(np.int8), "W"),
        numpy_helper.from_array(np.full(10, 0.1, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(10, np.int8), "wz"),
        numpy_helper.from_array(np.float32(0.1), "s"),
        numpy_helper.from_array(np.int8(zero_point), "z"),
        numpy_helper.from_array(np.array([0, 1, 8, 8], np.int64)[:2] * 0 + np.array([-1, 64], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Reshape", ["images", "shape"], ["flat"], name="flatten"),
        helper.make_node("QuantizeLinear", ["flat", "s", "z"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["W", "ws", "wz"], ["Wd"], name="dq_w", axis=1),
        helper.make_node("MatMul", ["xd", "Wd"], ["mm"], name="mm"),
    ]
    if int32_bias:
        inits += [
            numpy_helper.from_array(np.arange(10, dtype=np.int32), "b"),
            numpy_helper.from_array(np.float32(0.01), "bs"),
            numpy_helper.from_array(np.int32(0), "bz"),
        ]
        nodes += [
            helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], name="dq_bias"),
            helper.make_node("Add", ["mm", "bd"], ["logits"], name="add_bias"),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["mm"], ["logits"], name="out"))
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = ArtifactInfo(ViTConfig(), Preprocess(8, 1, (0.5,), (0.25,)), [str(i) for i in range(10)], precision="int8")
    for key, value in info.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("source", ["fp32", "int8"])
def test_layernorm_decomposed_graph_parses_and_builds(
    nano_variants: SimpleNamespace, tmp_path: Path, source: str
) -> None:
    """What TensorRT 8.5 gets: TensorRT's parser reads the decomposed graph and an engine builds from it."""
    import onnx

    from edgevit.engine.decompose import decompose_layernorm, is_decomposed

    src = nano_variants.fp32_onnx if source == "fp32" else nano_variants.int8_onnx
    model, count = decompose_layernorm(onnx.load(str(src)))
    assert count == 9
    dst = tmp_path / f"{src.stem}.ln-decomposed.onnx"
    onnx.save(model, str(dst))
    result = _build(dst, "fp32" if source == "fp32" else "int8", tmp_path / "engines", write=False)
    assert result.engine_size > 10_000
    assert any(is_decomposed(n.name) for n in model.graph.node)


@pytest.mark.filterwarnings("ignore:Use Deprecated in TensorRT-RTX")
@pytest.mark.parametrize("decomposed", [False, True])
def test_builder_flags_branch_on_real_tensorrt_objects(
    nano_variants: SimpleNamespace, tmp_path: Path, decomposed: bool
) -> None:
    """The builder-flags branch (config, profile, timing cache, FP32 layer choice) on TensorRT-RTX's own objects.

    TensorRT names each layer after its ONNX node: the FP32 layers chosen from the parsed network
    are exactly the nodes trtexec's --layerPrecisions names (LayerNorm, or its decomposition, and Softmax).
    """
    import onnx
    import tensorrt_rtx as trt

    from edgevit.engine.decompose import decompose_layernorm
    from edgevit.engine.modes import BuildSetup
    from edgevit.engine.network import NetworkJob, configure, fp32_layers, parse_network
    from edgevit.engine.prepare import fp32_node_names
    from edgevit.trt.trtapi import TrtVersion, make_logger

    path = nano_variants.int8_onnx
    if decomposed:
        path = tmp_path / "m.ln-decomposed.onnx"
        onnx.save(decompose_layernorm(onnx.load(str(nano_variants.int8_onnx)))[0], str(path))
    logger = make_logger(trt)
    builder = trt.Builder(logger.trt_logger)
    setup = BuildSetup("int8", "builder-flags", [], False, True)  # no precision flags: TensorRT-RTX has none
    opts = BuildOptions(onnx=path, batch_profile=(1, 4, 8), workspace_mib=64, opt_level=1)
    timing = tmp_path / "timing.cache"
    job = NetworkJob(
        trt, TrtVersion.parse(trt.__version__, module="tensorrt_rtx"), logger, builder, setup, opts, path, timing
    )
    net = parse_network(job)
    configured = configure(job, net)
    assert configured.timing is not None and configured.config.num_optimization_profiles == 1
    picked = {str(layer.name) for layer in fp32_layers(trt, net.network)}
    assert picked == set(fp32_node_names(path, ("LayerNormalization", "Softmax")))
    assert len(picked) == (85 if decomposed else 13)  # 9 LayerNorms (x 9 ops decomposed) + 4 Softmax
    serialized = builder.build_serialized_network(net.network, configured.config)
    assert serialized is not None and len(bytes(serialized)) > 10_000
    assert bytes(configured.config.get_timing_cache().serialize())
