"""Turn a trained edgevit checkpoint into the three foreign forms users bring: a bare timm
state dict, a Hugging Face ViT folder (pytorch_model.bin, config.json, preprocessor_config.json)
and a foreign ONNX (no edgevit metadata, input pixel_values, opset 13).

    python make_sources.py CHECKPOINT OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch

from edgevit.config import ViTConfig
from edgevit.model import VisionTransformer

out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
ck = torch.load(sys.argv[1], weights_only=True)
sd = ck["model"]
torch.save({k: v.clone() for k, v in sd.items()}, out / "timm.pth")
cfg = ck["model_config"]
pre = ck["preprocess"]
# Hugging Face layout
hf = {}
D = cfg["embed_dim"]
for k, v in sd.items():
    simple = {
        "cls_token": "vit.embeddings.cls_token",
        "pos_embed": "vit.embeddings.position_embeddings",
        "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
        "norm.weight": "vit.layernorm.weight",
        "norm.bias": "vit.layernorm.bias",
        "head.weight": "classifier.weight",
        "head.bias": "classifier.bias",
    }
    if k in simple:
        hf[simple[k]] = v
        continue
    _, i, rest = k.split(".", 2)
    p = f"vit.encoder.layer.{i}."
    if rest.startswith("attn.qkv."):
        kind = rest.rsplit(".", 1)[1]
        for j, n in enumerate(("query", "key", "value")):
            hf[p + f"attention.attention.{n}.{kind}"] = v[j * D : (j + 1) * D].clone()
        continue
    m = {
        "norm1.": "layernorm_before.",
        "norm2.": "layernorm_after.",
        "attn.proj.": "attention.output.dense.",
        "mlp.fc1.": "intermediate.dense.",
        "mlp.fc2.": "output.dense.",
    }
    for a, b in m.items():
        if rest.startswith(a):
            hf[p + b + rest[len(a) :]] = v
            break
    else:
        raise SystemExit(f"unmapped {k}")
hfdir = out / "hf"
hfdir.mkdir(exist_ok=True)
torch.save({k: v.contiguous() for k, v in hf.items()}, hfdir / "pytorch_model.bin")
names = ck["class_names"]
(hfdir / "config.json").write_text(
    json.dumps(
        {
            "model_type": "vit",
            "architectures": ["ViTForImageClassification"],
            "hidden_size": D,
            "num_hidden_layers": cfg["depth"],
            "num_attention_heads": cfg["num_heads"],
            "intermediate_size": int(D * cfg["mlp_ratio"]),
            "hidden_act": "gelu",
            "image_size": cfg["img_size"],
            "patch_size": cfg["patch_size"],
            "num_channels": cfg["in_chans"],
            "layer_norm_eps": cfg.get("layer_norm_eps", 1e-6),
            "qkv_bias": True,
            "id2label": {str(i): n for i, n in enumerate(names)},
        }
    )
)
(hfdir / "preprocessor_config.json").write_text(
    json.dumps(
        {
            "do_resize": True,
            "size": {"height": pre["size"], "width": pre["size"]},
            "resample": 2,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": pre["mean"],
            "image_std": pre["std"],
        }
    )
)
# foreign ONNX
m = VisionTransformer(ViTConfig(**cfg))
m.load_state_dict(sd)
m.eval()
x = torch.zeros(1, cfg["in_chans"], cfg["img_size"], cfg["img_size"])
torch.onnx.export(
    m,
    (x,),
    str(out / "foreign.onnx"),
    input_names=["pixel_values"],
    output_names=["logits"],
    opset_version=13,
    dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
    dynamo=False,
)
(out / "labels.txt").write_text("\n".join(names) + "\n")
print("wrote", sorted(p.name for p in out.iterdir()))
