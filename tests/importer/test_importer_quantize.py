"""Imported models go import -> quantize -> validate -> predict / TensorRT: a trained
DeiT-shaped timm state dict, the same model as a Hugging Face folder, and as foreign ONNX
graphs exported by torch at opsets 13, 17 and 18."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import CROP, export_onnx, timm_model, timm_to_hf
from foreign import write_safetensors

from edgevit import runtime
from edgevit.importer.core import ImportOptions, import_model
from edgevit.quant.config import QuantizeConfig
from edgevit.quant.graph import attention_matmuls
from edgevit.quant.quantize import quantize_onnx
from edgevit.quant.rules import check_qdq_graph

FLAGS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": CROP["crop_pct"], "interpolation": "bicubic"}


def _sources(trained, root: Path) -> dict[str, Path]:
    out = {}
    pth = root / "deit.pth"
    torch.save({"model": trained.state_dict()}, pth)
    out["timm"] = pth
    vit = timm_model("vit", num_classes=3, seed=1)  # HF has no distillation head: a plain ViT copy
    sd = {
        k: v for k, v in trained.state_dict().items() if k not in ("dist_token", "head_dist.weight", "head_dist.bias")
    }
    sd["pos_embed"] = torch.cat([trained.pos_embed[:, :1], trained.pos_embed[:, 2:]], 1)
    vit.load_state_dict(sd)
    folder = root / "hf"
    folder.mkdir()
    cfg = {
        "model_type": "vit",
        "architectures": ["ViTForImageClassification"],
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 32,
        "patch_size": 8,
        "num_channels": 3,
        "layer_norm_eps": 1e-6,
        "id2label": {"0": "blue", "1": "green", "2": "red"},
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    write_safetensors(folder / "model.safetensors", timm_to_hf(vit.state_dict(), 32))
    out["hf"] = folder
    out["onnx17"] = export_onnx(trained, root / "foreign17.onnx", 17, input_name="pixel_values")
    return out


@pytest.fixture(scope="module")
def imported(trained_timm, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("imported")
    arts = {}
    for name, src in _sources(trained_timm, root).items():
        opts = ImportOptions(num_heads=2, **FLAGS) if name != "hf" else ImportOptions(**FLAGS)
        arts[name] = import_model(src, root / f"{name}.onnx", opts).path
    return arts


@pytest.mark.parametrize("name", ["timm", "hf", "onnx17"])
def test_import_quantize_validate(name, imported, color_folder):
    from edgevit.validate import validate

    fp32 = imported[name]
    q = quantize_onnx(
        fp32,
        None,
        QuantizeConfig(num_images=64),
        calib_dir=fp32.parent / "calib",
        data=str(color_folder),
        progress=False,
    )
    import onnx

    qmodel = onnx.load(str(q.path))
    assert check_qdq_graph(qmodel) == []
    # every Linear and the patch embedding in INT8; the attention batch matmuls in float
    assert q.summary["quantized_ops"] == q.summary["weighted_ops"] - len(attention_matmuls(onnx.load(str(fp32)))) >= 10
    assert "smoothquant" in q.table.transforms and len(q.table.transforms["smoothquant"]["scales"]) == 5
    from edgevit.data import load_dataset

    with runtime.load(fp32) as ref, runtime.load(q.path) as cand:
        ds = load_dataset(color_folder, preprocess=ref.info.preprocess)
        report = validate(ref, cand, ds.test.images, ds.test.labels, "colors:test")
        assert report.reference.top1 > 0.9  # a trained model
        assert report.agreement >= 99.0
        pred = cand.predict([ds.test.images[0]], top_k=2)
        assert pred.labels[0][0] in cand.class_names


@pytest.mark.parametrize("opset", [13, 18])
def test_foreign_graphs_quantize_at_other_opsets(opset, trained_timm, tmp_path, color_folder):
    src = export_onnx(trained_timm, tmp_path / "f.onnx", opset)
    fp32 = import_model(src, tmp_path / "m.onnx", ImportOptions(**FLAGS)).path
    q = quantize_onnx(
        fp32, None, QuantizeConfig(num_images=32), calib_dir=tmp_path / "calib", data=str(color_folder), progress=False
    )
    import onnx

    attention = attention_matmuls(onnx.load(str(fp32)))
    assert attention and q.summary["quantized_ops"] == q.summary["weighted_ops"] - len(attention) > 10


def test_unsimplified_foreign_graph_still_quantizes(trained_timm, tmp_path, color_folder):
    """quantize stays robust on a graph with its Shape subgraphs (any ONNX with metadata)."""
    src = export_onnx(trained_timm, tmp_path / "f.onnx", 17)
    fp32 = import_model(src, tmp_path / "m.onnx", ImportOptions(simplify=False, **FLAGS)).path
    q = quantize_onnx(
        fp32, None, QuantizeConfig(num_images=32), calib_dir=tmp_path / "calib", data=str(color_folder), progress=False
    )
    import onnx

    model = onnx.load(str(q.path))
    assert check_qdq_graph(model) == []
    shapes = [n for n in model.graph.node if n.op_type == "Shape"]
    prod = {o: n.op_type for n in model.graph.node for o in n.output}
    assert shapes and all(prod.get(n.input[0]) != "DequantizeLinear" for n in shapes)


def test_smoothquant_finds_every_layernorm_pair_in_foreign_graphs(trained_timm, tmp_path):
    import onnx

    from edgevit.quant.smoothquant import find_layernorm_pairs

    for opset in (13, 17):
        src = export_onnx(trained_timm, tmp_path / f"f{opset}.onnx", opset)
        m = import_model(src, tmp_path / f"m{opset}.onnx", ImportOptions(**FLAGS)).path
        pairs = find_layernorm_pairs(onnx.load(str(m)))
        # norm1 -> qkv and norm2 -> fc1 per block, final norm -> both heads (class and distillation token)
        assert sorted(len(p.layers) for p in pairs) == [1, 1, 1, 1, 2], opset


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt-rtx is not installed")
def test_imported_int8_models_parse_and_build_with_tensorrt(imported, color_folder, tmp_path):
    from edgevit.engine.build import build_engine
    from edgevit.engine.options import BuildOptions

    for name in ("timm", "onnx17"):
        q = quantize_onnx(
            imported[name],
            tmp_path / f"{name}.int8.onnx",
            QuantizeConfig(num_images=32),
            calib_dir=tmp_path / "calib",
            data=str(color_folder),
            progress=False,
        )
        opts = BuildOptions(
            onnx=q.path, precision="best", engines_dir=tmp_path / "engines", allow_rtx=True, prefer_rtx=True
        )
        result = build_engine(opts, write=False)
        assert result.engine_size > 10_000


def test_imported_artifact_serves_through_the_cli(imported, color_folder, tmp_path, capsys):
    import cv2

    from edgevit.cli import main

    img = next((color_folder / "red").glob("*.png"))
    assert main(["predict", str(imported["onnx17"]), str(img), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["info", str(imported["onnx17"])]) == 0
    summary = capsys.readouterr().out
    assert "architecture not known" in summary and "made from   onnx foreign17.onnx (made by pytorch" in summary
    assert main(["info", str(imported["onnx17"]), "--json"]) == 0
    assert '"model_config": null' in capsys.readouterr().out
    assert (
        main(["camera", str(img), "--model", str(imported["hf"]), "--headless", "--sink", str(tmp_path / "r.jsonl")])
        == 0
    )
    assert json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])["top_k"]
    del cv2
