"""Foreign models for the import tests, made at test time: timm-layout state dicts from
``timm_like`` (a plain-torch ViT with timm's key names, checked against timm 1.0.31), tiny
Hugging Face ViT/DeiT folders, and torch exports of both at opsets 13, 17 and 18."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm_like as tl
import torch
from foreign import write_hf_folder

# timm's ViT/DeiT family in miniature (32 px, patch 8, width 32, depth 2, 2 heads)
FLAVOURS = {
    "vit": {},
    "deit_distilled": {"distilled": True},
    "deit3": {"no_embed_class": True, "init_values": 1e-5},
    "reg4_gap": {"class_token": False, "reg_tokens": 4, "global_pool": "avg", "fc_norm": True, "init_values": 1e-5},
    "no_qkv_bias": {"qkv_bias": False},
    "qk_norm": {"qk_norm": True},
    "cls_avg_fc_norm": {"global_pool": "avg", "fc_norm": True},
}


def timm_model(flavour: str = "vit", num_classes: int = 5, seed: int = 0, **over) -> torch.nn.Module:
    torch.manual_seed(seed)
    kw = {**FLAVOURS[flavour], **over}
    c = tl.TimmViTConfig(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_hidden=64, num_classes=num_classes, **kw
    )
    m = tl.TimmLikeViT(c).eval()
    with torch.no_grad():
        for p in m.parameters():  # every tensor distinct (exporters merge equal ones)
            p.normal_(0, 0.2)
    return m


def export_onnx(model: torch.nn.Module, path: Path, opset: int, input_name: str = "input", size: int = 32) -> Path:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(2, 3, size, size),),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=["output"],
            dynamic_axes={input_name: {0: "n"}, "output": {0: "n"}},
        )
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="session")
def hf_vit_folder(tmp_path_factory) -> Path:
    pp = {
        "do_resize": True,
        "size": {"height": 32, "width": 32},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "ViTImageProcessor",
    }
    return write_hf_folder(tmp_path_factory.mktemp("hf") / "vit", "vit", pp)


@pytest.fixture(scope="session")
def color_folder(tmp_path_factory) -> Path:
    """3 classes of 40 x 48 RGB images (a coloured bar per class), train/val/test by hash."""
    import cv2

    root = tmp_path_factory.mktemp("colors")
    rng = np.random.default_rng(0)
    for ci, name in enumerate(("red", "green", "blue")):
        d = root / name
        d.mkdir()
        for i in range(40):
            img = rng.integers(0, 80, size=(40, 48, 3), dtype=np.uint8)
            img[:, 10 * ci : 10 * ci + 12, 2 - ci] = 250
            cv2.imwrite(str(d / f"{i}.png"), img)
    return root


PRE_KW = {"size": 32, "channels": 3, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
CROP = {"resize_mode": "crop", "crop_pct": 0.875, "interpolation": "bicubic"}


@pytest.fixture(scope="session")
def trained_timm(color_folder) -> torch.nn.Module:
    """A DeiT-distilled-shaped timm model trained for a few seconds on the colour folder with
    the timm-style preprocessing (bicubic shorter side, crop 0.875)."""
    from edgevit.data import load_dataset
    from edgevit.preprocess import Preprocess

    pre = Preprocess(**PRE_KW, **CROP)
    ds = load_dataset(color_folder, preprocess=pre)
    x, y = torch.from_numpy(pre(ds.train.images)), torch.from_numpy(ds.train.labels)
    model = timm_model("deit_distilled", num_classes=3, seed=1)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def timm_to_hf(sd: dict[str, torch.Tensor], dim: int) -> dict[str, np.ndarray]:
    """timm names -> Hugging Face ViTForImageClassification names (save_pretrained's)."""
    out = {}
    for k, v in sd.items():
        a = v.detach().numpy()
        if k == "cls_token":
            out["vit.embeddings.cls_token"] = a
        elif k == "pos_embed":
            out["vit.embeddings.position_embeddings"] = a
        elif k.startswith("patch_embed.proj."):
            out["vit.embeddings.patch_embeddings.projection." + k.split(".")[-1]] = a
        elif k.startswith("norm."):
            out["vit.layernorm." + k.split(".")[-1]] = a
        elif k.startswith("head."):
            out["classifier." + k.split(".")[-1]] = a
        else:
            _, i, rest = k.split(".", 2)
            base = f"vit.encoder.layer.{i}."
            kind = rest.split(".")[-1]
            if rest.startswith("attn.qkv."):
                for j, name in enumerate(("query", "key", "value")):
                    out[f"{base}attention.attention.{name}.{kind}"] = a[j * dim : (j + 1) * dim]
            else:
                mapped = {
                    "norm1": "layernorm_before",
                    "norm2": "layernorm_after",
                    "attn.proj": "attention.output.dense",
                    "mlp.fc1": "intermediate.dense",
                    "mlp.fc2": "output.dense",
                }[rest.rsplit(".", 1)[0]]
                out[f"{base}{mapped}.{kind}"] = a
    return out
