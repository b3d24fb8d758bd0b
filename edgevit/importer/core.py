"""Import a model made elsewhere: weights (timm / DeiT / Hugging Face / an edgevit
checkpoint) or any ONNX image classifier -> an edgevit FP32 ONNX artifact.

The artifact carries edgevit's metadata (the model config where it is known, the
preprocessing, class names, the source's sha256), so ``quantize``, ``validate``,
``predict``, ``bench``, ``inspect``, ``build``, ``camera``, ``serve`` and ``export-triton``
take it like one edgevit trained. Weights also give an edgevit checkpoint next to it
(``OUT.pt``) for ``edgevit train --init``.

The FP32 function never changes on the way: weights are loaded strictly into edgevit's
ViT and the export is compared with PyTorch; an ONNX graph's renamed and simplified form is
compared with the original on ONNX Runtime.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import ArtifactInfo, atomic_output, set_onnx_metadata, sha256_file, write_bytes_atomic
from edgevit.errors import ArtifactError, EdgeVitError
from edgevit.preprocess import INTERPOLATIONS, RESIZE_MODES, Preprocess

IMAGENET_HINT = (
    "ImageNet: --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225; timm ViT / HF ViT: 0.5 0.5 0.5 and 0.5 0.5 0.5"
)


@dataclass
class ImportOptions:
    """What the source cannot say (or what the user overrides).

    Args:
        num_heads: attention heads of timm weights.
        arch: a timm ViT/DeiT model name (gives the heads).
        labels: a file with one class name per line.
        num_classes: the class count (names become ``0..N-1``).
        size: the model's input side (weights: resamples the position embeddings when it
            differs from the trained size).
        mean, std: per-channel normalization of [0, 1] pixels (one value per channel).
        resize: ``squash`` or ``crop`` (shorter side, then the centre).
        crop_pct: the centre crop's share of the resized side.
        interpolation: ``bilinear`` or ``bicubic`` (Pillow-exact), or ``area`` (edgevit's OpenCV).
        opset: ONNX opset of exported weights.
        tolerance: largest allowed absolute logit difference against the source.
        simplify: run onnxslim on foreign ONNX graphs.
    """

    num_heads: int | None = None
    arch: str | None = None
    labels: str | None = None
    num_classes: int | None = None
    size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: str | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    opset: int = 17
    tolerance: float = 1e-3
    simplify: bool = True


@dataclass
class ImportResult:
    path: Path
    checkpoint: Path | None
    info: ArtifactInfo
    kind: str
    max_abs_diff: float
    notes: list[str] = field(default_factory=list)


def is_onnx(source: Path) -> bool:
    return source.is_file() and source.suffix.lower() == ".onnx"


def resolve_preprocess(hints: dict[str, Any], opts: ImportOptions, size: int | None, channels: int) -> Preprocess:
    """The source's preprocessing, overridden by the flags; a missing mean/std or size is
    one error naming the flags."""
    p = dict(hints)
    for key, value in (
        ("size", opts.size),
        ("mean", opts.mean),
        ("std", opts.std),
        ("resize_mode", opts.resize),
        ("crop_pct", opts.crop_pct),
        ("interpolation", opts.interpolation),
    ):
        if value is not None:
            p[key] = value
    if size is not None and "size" not in p:
        p["size"] = size
    missing = [flag for key, flag in (("size", "--size N"), ("mean", "--mean"), ("std", "--std")) if p.get(key) is None]
    if missing:
        raise EdgeVitError(
            f"the source does not say its preprocessing ({', '.join(m.split()[0] for m in missing)} unknown); "
            f"pass {' and '.join(missing)} (one value per channel; {IMAGENET_HINT}), and --resize/--crop-pct/"
            "--interpolation if it was not a bicubic squash"
        )
    for key in ("mean", "std"):
        if len(p[key]) != channels:
            raise EdgeVitError(
                f"--{key} has {len(p[key])} value(s) but the model takes {channels}-channel images; give {channels}"
            )
    crop_pct = float(p.get("crop_pct", 1.0))
    resize = p.get("resize_mode") or ("crop" if crop_pct < 1.0 else "squash")
    if resize not in RESIZE_MODES:
        raise EdgeVitError(f"--resize {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    interp = p.get("interpolation") or "bicubic"
    if interp not in INTERPOLATIONS:
        raise EdgeVitError(f"--interpolation {interp!r}; choose bilinear or bicubic")
    if not 0.0 < crop_pct <= 1.0:
        raise EdgeVitError(f"--crop-pct must be in (0, 1], got {crop_pct}")
    return Preprocess(
        size=int(p["size"]),
        channels=channels,
        mean=tuple(p["mean"]),
        std=tuple(p["std"]),
        resize_mode=resize,
        crop_pct=crop_pct,
        interpolation=interp,
    )


def resolve_classes(source_names: list[str] | None, opts: ImportOptions, logits: int | None) -> list[str]:
    if opts.labels:
        path = Path(opts.labels)
        if not path.is_file():
            raise EdgeVitError(f"--labels {path} does not exist")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif opts.num_classes:
        names = [str(i) for i in range(opts.num_classes)]
    elif source_names:
        names = list(source_names)
    elif logits:
        names = [str(i) for i in range(logits)]
    else:
        raise EdgeVitError("the source does not say how many classes it has; pass --labels FILE or --num-classes N")
    if logits is not None and len(names) != logits:
        raise EdgeVitError(
            f"{len(names)} class names for a model with {logits} outputs; give one name per output "
            "(to train another class count, fine-tune with `edgevit train --init`)"
        )
    if len(names) < 2:
        raise EdgeVitError("a classifier needs at least two classes")
    return names


def import_model(source: str | Path, out_path: str | Path, opts: ImportOptions | None = None) -> ImportResult:
    """Import ``source`` to ``out_path`` (see the module docstring)."""
    opts = opts or ImportOptions()
    source, out_path = Path(source), Path(out_path)
    if not source.exists():
        raise EdgeVitError(f"{source} does not exist")
    if out_path.suffix.lower() != ".onnx":
        raise EdgeVitError(f"-o {out_path}: the artifact is an ONNX file; name it *.onnx")
    if out_path.resolve() == source.resolve():
        raise EdgeVitError("the artifact would overwrite its source; choose another -o")
    if is_onnx(source):
        return _import_onnx(source, out_path, opts)
    return _import_weights(source, out_path, opts)


def _import_onnx(source: Path, out_path: Path, opts: ImportOptions) -> ImportResult:
    import onnx

    from edgevit.export import random_images
    from edgevit.importer import onnx_source as S

    try:
        original = onnx.load(str(source))
    except Exception as exc:
        raise ArtifactError(f"{source} is not a readable ONNX model ({str(exc).splitlines()[0][:160]})") from exc
    if any(p.key.startswith("edgevit.") for p in original.metadata_props):
        raise EdgeVitError(f"{source} is already an edgevit artifact; use it as it is")
    facts = S.inspect_graph(original, str(source))
    pre = resolve_preprocess({}, opts, facts.size, facts.channels)
    if facts.size is not None and pre.size != facts.size:
        raise EdgeVitError(f"--size {pre.size}, but {source} takes {facts.size} px images")
    model = onnx.ModelProto()
    model.CopyFrom(original)
    S.normalize_io(model, facts, pre.size)
    notes = []
    if opts.simplify:
        model, note = S.simplify(model)
        notes.append(note)
    ref_sess, new_sess = S.session(original), S.session(model)
    x = pre(random_images(pre, 8))
    try:
        diff = S.compare(ref_sess, new_sess, x, facts.batch)
    except ArtifactError as exc:
        if facts.batch is not None:
            raise ArtifactError(
                f"{source} has a fixed batch of {facts.batch} built into its graph ({exc}); "
                "re-export it with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
            ) from exc
        raise
    logits = S.run(new_sess, x[:1]).shape[1]
    names = resolve_classes(None, opts, logits)
    scale = max(1.0, float(np.abs(S.run(ref_sess, x[:1])).max()))
    if not diff <= opts.tolerance * scale:
        raise ArtifactError(
            f"the imported graph differs from {source.name} by {diff:.2e} on {len(x)} images; "
            "import with --no-simplify and report it"
        )
    sha = sha256_file(source)
    info = ArtifactInfo(
        model_config=None,
        preprocess=pre,
        class_names=names,
        precision="fp32",
        source_sha256=sha,
        data="",
        extra={
            "import": {
                "source": source.name,
                "kind": "onnx",
                "producer": f"{original.producer_name} {original.producer_version}".strip(),
                "opset": facts.opset,
                "simplify": notes[0] if notes else "off",
                "max_abs_logit_diff": diff,
                "verify_images": len(x),
            }
        },
    )
    set_onnx_metadata(model, info)
    model.producer_name = "edgevit"
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"the imported graph fails onnx.checker ({str(exc).splitlines()[0]})") from exc
    with atomic_output(out_path) as tmp:
        onnx.save_model(model, str(tmp))
    return ImportResult(out_path, None, info, "onnx", diff, notes)


def _import_weights(source: Path, out_path: Path, opts: ImportOptions) -> ImportResult:
    import torch

    from edgevit.export import export_model, random_images
    from edgevit.model import VisionTransformer
    from edgevit.weights import CHECKPOINT_FORMAT, SUPPORTED, adapt_state_dict, read_weights

    if source.is_file() and source.suffix.lower() not in (".pth", ".pt", ".bin", ".safetensors"):
        raise ArtifactError(f"{source}: {SUPPORTED} (.pth, .pt, .bin, .safetensors, a folder with config.json, .onnx)")
    fw = read_weights(source, num_heads=opts.num_heads, arch=opts.arch)
    notes = []
    cfg = fw.config
    if opts.size is not None and opts.size != cfg.img_size:
        if opts.size % cfg.patch_size:
            raise EdgeVitError(f"--size {opts.size} is not a multiple of the patch size {cfg.patch_size}")
        cfg = cfg.replace(img_size=opts.size)
    model = VisionTransformer(cfg)
    sd, done = adapt_state_dict(fw.state_dict, fw.config, cfg)
    notes += done
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"the weights do not fit the inferred ViT ({str(exc).splitlines()[0][:200]})") from exc
    model.eval()
    pre = resolve_preprocess(fw.preprocess, opts, cfg.img_size, cfg.in_chans)
    if pre.size != cfg.img_size:
        raise EdgeVitError(
            f"the preprocessing makes {pre.size} px inputs but the model takes {cfg.img_size} px; pass --size {pre.size} "
            "to resample the position embeddings, or fix --size"
        )
    names = resolve_classes(fw.class_names, opts, cfg.num_classes)
    sha = sha256_file(source) if source.is_file() else _folder_sha(source)
    record = {"source": source.name, "kind": fw.kind, "adapted": done}
    info = ArtifactInfo(
        model_config=cfg,
        preprocess=pre,
        class_names=names,
        precision="fp32",
        source_sha256=sha,
        data=fw.data,
        extra={"import": record},
    )
    ckpt_path = out_path.with_suffix(".pt")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "model_config": cfg.to_dict(),
        "preprocess": pre.to_dict(),
        "class_names": names,
        "data": fw.data,
        "metrics": {},
        "import": record,
        "epoch": -1,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    x = pre(random_images(pre, 8))
    doc = f"{fw.kind} ViT ({cfg.depth} blocks, dim {cfg.embed_dim}) imported by edgevit from {source.name}"
    diff = export_model(model, info, out_path, x, opset=opts.opset, tolerance=opts.tolerance, doc=doc)
    write_bytes_atomic(ckpt_path, buf.getvalue())
    return ImportResult(out_path, ckpt_path, info, fw.kind, diff, notes)


def _folder_sha(folder: Path) -> str:
    """sha256 of a folder's files (name and content, sorted): a Hugging Face folder's identity."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()
