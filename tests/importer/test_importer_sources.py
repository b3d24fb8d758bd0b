"""edgevit import: timm/DeiT state dicts, Hugging Face folders and foreign ONNX graphs
become artifacts that compute what the source computes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FLAVOURS, export_onnx, timm_model
from foreign import EXPECTED, hf_input, write_hf_folder, write_safetensors

from edgevit.cli import main
from edgevit.errors import EdgeVitError
from edgevit.importer.core import ImportOptions, import_model
from edgevit.model import VisionTransformer
from edgevit.weights import read_weights, resample_pos_embed

MEANS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_timm_state_dicts_load_exactly(flavour, tmp_path):
    ref = timm_model(flavour)
    path = tmp_path / "w.pth"
    torch.save({"model": ref.state_dict()}, path)  # the DeiT releases' layout
    fw = read_weights(path, num_heads=2)
    model = VisionTransformer(fw.config).eval()
    model.load_state_dict(fw.state_dict, strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-6)
    assert fw.config.dist_token == (flavour == "deit_distilled")
    assert fw.config.img_size == 32 and fw.config.patch_size == 8 and fw.config.mlp_ratio == 2.0


def test_timm_containers_safetensors_and_training_checkpoints(tmp_path):
    ref = timm_model("vit")
    st = tmp_path / "w.safetensors"
    write_safetensors(st, {k: v.numpy() for k, v in ref.state_dict().items()})
    assert read_weights(st, num_heads=2).config.embed_dim == 32
    # timm's training checkpoint: state_dict + EMA + argparse args + the model name
    ckpt = tmp_path / "train.pth.tar.pth"
    ema = {k: v + 1 for k, v in ref.state_dict().items()}
    torch.save({"state_dict": ref.state_dict(), "state_dict_ema": ema, "args": argparse.Namespace(lr=1)}, ckpt)
    fw = read_weights(ckpt, num_heads=2)
    assert torch.equal(fw.state_dict["head.bias"], ema["head.bias"])  # EMA preferred, as timm does
    bare = tmp_path / "bare.pth"
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, bare)
    assert "head.weight" in read_weights(bare, num_heads=2).state_dict
    with pytest.raises(EdgeVitError, match="--num-heads N or --arch NAME"):
        read_weights(bare)
    with pytest.raises(EdgeVitError, match="width 192"):
        read_weights(bare, arch="deit_tiny_patch16_224")


@pytest.mark.parametrize("kind", ["vit", "deit"])
def test_hugging_face_folder_gives_transformers_logits(kind, tmp_path):
    fw = read_weights(write_hf_folder(tmp_path / kind, kind))
    assert fw.config.layer_norm_eps == 1e-12 and fw.class_names == ["LABEL_0", "LABEL_1", "LABEL_2"]
    model = VisionTransformer(fw.config).eval()
    model.load_state_dict(fw.state_dict, strict=True)
    with torch.no_grad():
        out = model(torch.from_numpy(hf_input())).numpy()
    np.testing.assert_allclose(out, np.array(EXPECTED[kind]["logits"]), atol=2e-5)


def test_hf_preprocessing_and_labels_are_kept(hf_vit_folder, tmp_path):
    r = import_model(hf_vit_folder, tmp_path / "hf.onnx")
    pre = r.info.preprocess
    assert (pre.size, pre.resize_mode, pre.crop_pct, pre.interpolation, pre.mean) == (
        32,
        "squash",
        1.0,
        "bilinear",
        (0.5, 0.5, 0.5),
    )
    assert r.info.class_names == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert r.info.model_config.layer_norm_eps == 1e-12
    assert r.checkpoint.is_file() and r.max_abs_diff < 1e-4


def test_deit_hf_processor_is_squash_then_crop(tmp_path):
    pp = {"size": {"height": 36, "width": 36}, "crop_size": {"height": 32, "width": 32}, "do_center_crop": True}
    pp |= {"resample": 3, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    r = import_model(write_hf_folder(tmp_path / "d", "deit", pp), tmp_path / "d.onnx")
    pre = r.info.preprocess
    assert (pre.resize_mode, pre.stage_size, pre.size, pre.interpolation) == ("squash", 36, 32, "bicubic")


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_foreign_onnx_imports_at_every_opset(opset, tmp_path):
    import onnxruntime as ort

    ref = timm_model("vit")
    src = export_onnx(ref, tmp_path / "timm.onnx", opset, input_name="pixel_values")
    out = tmp_path / "imported.onnx"
    r = import_model(src, out, ImportOptions(**MEANS))
    assert r.info.model_config is None and r.info.class_names == [str(i) for i in range(5)]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"] and [o.name for o in sess.get_outputs()] == ["logits"]
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"images": x})[0], ref(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_missing_preprocessing_and_bad_counts_name_the_flags(tmp_path):
    src = export_onnx(timm_model("vit"), tmp_path / "m.onnx", 17)
    with pytest.raises(EdgeVitError, match="pass --mean and --std"):
        import_model(src, tmp_path / "o.onnx")
    with pytest.raises(EdgeVitError, match="give 3"):
        import_model(src, tmp_path / "o.onnx", ImportOptions(mean=(0.5,), std=(0.5,)))
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(EdgeVitError, match="2 class names for a model with 5 outputs"):
        import_model(src, tmp_path / "o.onnx", ImportOptions(labels=str(labels), **MEANS))
    assert not (tmp_path / "o.onnx").exists()


def _two_input_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 8, 8])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_unsupported_sources_are_one_line_with_exit_2(tmp_path, capsys):
    swin = tmp_path / "swin.pth"
    torch.save({"layers.0.blocks.0.attn.relative_position_bias_table": torch.zeros(4, 2)}, swin)
    hf_swin = tmp_path / "hf_swin"
    hf_swin.mkdir()
    (hf_swin / "config.json").write_text(
        json.dumps({"model_type": "swin", "architectures": ["SwinForImageClassification"]})
    )
    for src, words in (
        (swin, "a Swin transformer"),
        (hf_swin, "Hugging Face swin model"),
        (_two_input_onnx(tmp_path / "two.onnx"), "has 2 inputs"),
    ):
        assert main(["import", str(src), "-o", str(tmp_path / "x.onnx")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err and "edgevit imports" in err


def test_raw_pickle_is_refused_in_one_complete_line(tmp_path, capsys):
    path = tmp_path / "pickled.pth"
    torch.save({"model": Path("x")}, path)  # an arbitrary Python object (a pathlib class)
    assert main(["import", str(path), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "arbitrary code" in err and "state_dict()" in err


def test_position_embeddings_resample_exactly_at_the_same_size_and_like_timm():
    import timm_like as tl

    pe = torch.randn(1, 2 + 16, 8)
    assert torch.equal(resample_pos_embed(pe, 4, 2), pe)
    ours = resample_pos_embed(pe, 6, 2)
    theirs = tl.resample_abs_pos_embed(pe, (6, 6), num_prefix_tokens=2)
    assert ours.shape == (1, 38, 8) and torch.equal(ours[:, :2], pe[:, :2])
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_weights_import_at_another_size_resamples(tmp_path):
    src = tmp_path / "w.pth"
    torch.save(timm_model("deit3").state_dict(), src)
    r = import_model(src, tmp_path / "big.onnx", ImportOptions(num_heads=2, size=48, **MEANS))
    assert r.info.model_config.img_size == 48 and r.info.preprocess.size == 48
    assert any("resampled" in n for n in r.notes)
