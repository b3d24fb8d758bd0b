"""``edgevit import SOURCE -o OUT.onnx``."""

from __future__ import annotations

import argparse
from typing import Any

from edgevit.options import add_output, add_switch


def handler(args: argparse.Namespace) -> int:
    from edgevit.importer.core import ImportOptions, import_model

    opts = ImportOptions(
        num_heads=args.num_heads,
        arch=args.arch,
        labels=args.labels,
        num_classes=args.num_classes,
        size=args.size,
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
        resize=args.resize,
        crop_pct=args.crop_pct,
        interpolation=args.interpolation,
        opset=args.opset,
        tolerance=args.tolerance,
        simplify=args.simplify,
    )
    r = import_model(args.source, args.output, opts)
    info = r.info
    what = (
        f"ViT {info.model_config.img_size} px, patch {info.model_config.patch_size}, width {info.model_config.embed_dim}, "
        f"depth {info.model_config.depth}, {info.model_config.num_heads} heads"
        if info.model_config is not None
        else f"ONNX classifier, {info.preprocess.size} px"
    )
    print(
        f"{r.path}: {r.kind} -> {what}, {len(info.class_names)} classes; {info.preprocess.describe_resize()}; "
        f"max abs logit diff vs the source {r.max_abs_diff:.2e}"
    )
    for note in r.notes:
        print(f"  {note}")
    if r.checkpoint:
        print(f"  checkpoint for fine-tuning (edgevit train --init): {r.checkpoint}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "import",
        help="a timm/DeiT/Hugging Face ViT or any ONNX image classifier -> an edgevit FP32 artifact",
        description="SOURCE: a timm-style ViT/DeiT state dict (.pth .pt .bin .safetensors), a Hugging Face ViT/DeiT "
        "folder (config.json + weights), or an ONNX image classifier.",
    )
    p.add_argument("source")
    add_output(p, "the artifact (.onnx); weights also give OUT.pt beside it", required=True)
    p.add_argument("--num-heads", type=int, help="attention heads (timm weights do not store them)")
    p.add_argument("--arch", help="timm model name of the weights, e.g. deit_tiny_patch16_224 (gives the heads)")
    p.add_argument("--labels", help="class names, one per line")
    p.add_argument("--num-classes", type=int, help="class count when there are no names (names 0..N-1)")
    p.add_argument("--size", type=int, help="input side in pixels (weights: resamples the position embeddings)")
    p.add_argument("--mean", type=float, nargs="+", help="per-channel mean of [0, 1] pixels (one value: one channel)")
    p.add_argument("--std", type=float, nargs="+", help="per-channel std (one value: one channel)")
    p.add_argument("--resize", choices=("squash", "crop"), help="squash both sides, or shorter side + centre crop")
    p.add_argument("--crop-pct", type=float, help="centre crop share of the resized side (timm's crop_pct)")
    p.add_argument("--interpolation", choices=("bilinear", "bicubic"), help="Pillow-exact resize filter")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset of exported weights (17+)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest abs logit difference vs the source")
    add_switch(p, "simplify", True, "fold an ONNX source's shape subgraphs with onnxslim (proved unchanged)")
    p.set_defaults(func=handler)
