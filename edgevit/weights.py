"""Weights made elsewhere, read into edgevit's model: timm ViT/DeiT state dicts, Hugging
Face ViT/DeiT folders, and edgevit's own checkpoints.

edgevit's :class:`~edgevit.model.VisionTransformer` uses timm's parameter names, so every
source is brought to timm's layout (Hugging Face's ``query``/``key``/``value`` become one
``qkv``), and the architecture is read from the tensor shapes (patch size, width, depth,
MLP ratio, class/distillation/register tokens, LayerScale, pooling, image size from the
position embeddings). What shapes cannot say, the attention head count, comes from a
config (Hugging Face ``config.json``, timm's hub ``config.json``, the ``arch`` of a timm
training checkpoint), from a timm model name (``--arch``) or from ``--num-heads``.

Files are read without running code from them: ``torch.load(weights_only=True)`` (timm's
training checkpoints also hold an ``argparse.Namespace``, allowed by name) and a plain
reader for ``.safetensors`` (8-byte header length, JSON header, raw little-endian data).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.config import ViTConfig
from edgevit.errors import ArtifactError, EdgeVitError, first_line

CHECKPOINT_FORMAT = "edgevit-checkpoint/1"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TIMM_EPS = 1e-6  # timm and DeiT's LayerNorm (not stored in their weights)
HF_EPS = 1e-12  # transformers' ViTConfig/DeiTConfig default

# timm's ViT/DeiT size names -> (width, heads), from the model_args of timm's registered
# models (vision_transformer.py, deit.py); vit_base_patch16_gap_224 is the one exception (16).
TIMM_SIZES: dict[str, tuple[int, int]] = {
    "tiny": (192, 3),
    "small": (384, 6),
    "little": (320, 5),
    "medium": (512, 8),
    "mediumd": (512, 8),
    "betwixt": (640, 10),
    "base": (768, 12),
    "large": (1024, 16),
    "huge": (1280, 16),
    "giant": (1408, 16),
    "gigantic": (1664, 16),
}
TIMM_HEAD_EXCEPTIONS = {"vit_base_patch16_gap_224": 16}
_ARCH = re.compile(r"^(vit|deit3|deit)_([a-z]+)_(?:distilled_)?patch\d+")


@dataclass
class ForeignWeights:
    """A state dict in timm's layout with the architecture and what the source says about
    its inputs.

    Args:
        state_dict: parameters under timm's (= edgevit's) names.
        config: the architecture.
        kind: ``timm``, ``huggingface`` or ``edgevit``.
        source: the file or folder read.
        class_names: from the source (Hugging Face ``id2label``, timm ``label_names``,
            an edgevit checkpoint), else None.
        preprocess: what the source says about preprocessing, as keyword arguments of
            :class:`~edgevit.preprocess.Preprocess` (``size``, ``mean``, ``std``,
            ``resize_mode``, ``crop_pct``, ``interpolation``); empty when it says nothing.
        data: the data an edgevit checkpoint was trained on.
    """

    state_dict: dict[str, torch.Tensor]
    config: ViTConfig
    kind: str
    source: Path
    class_names: list[str] | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    data: str = ""


# -- reading files ------------------------------------------------------------------------
def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with torch's warnings silenced and every failure one
    complete line (a raw pickle is refused, with why)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # timm's training checkpoints store their argparse arguments next to the weights
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "Weights only load failed" in text or "weights_only" in text:
            raise ArtifactError(
                f"{what} {path} holds Python objects besides tensors (a pickled model or class), and edgevit "
                "loads weights only, since unpickling anything else can run arbitrary code; from a copy you "
                "trust, save model.state_dict() and pass that file"
            ) from exc
        raise ArtifactError(
            f"{what} {path} is corrupt or not a torch file ({first_line(exc)[:160]}); restore or re-save it"
        ) from exc


_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` file (BF16 widened to float32)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("shorter than a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 2**20:
                raise ValueError(f"header length {n} is implausible")
            header = json.loads(f.read(n).decode("utf-8"))
            base = 8 + n
            meta = header.pop("__metadata__", None) or {}
            out = {}
            for name, e in header.items():
                begin, end = e["data_offsets"]
                f.seek(base + begin)
                buf = f.read(end - begin)
                if len(buf) != end - begin:
                    raise ValueError(f"tensor {name} is truncated")
                if e["dtype"] == "BF16":
                    a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
                elif e["dtype"] in _ST_DTYPES:
                    a = np.frombuffer(buf, dtype=np.dtype(_ST_DTYPES[e["dtype"]]).newbyteorder("<"))
                else:
                    raise ValueError(f"tensor {name} has dtype {e['dtype']}, which edgevit does not read")
                out[name] = a.reshape(tuple(e["shape"])).astype(a.dtype.newbyteorder("="))
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file ({first_line(exc)})") from exc
    return out, dict(meta)


def _tensors(path: Path, obj: Any = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A weight file's tensors (unwrapped as timm does) and its non-tensor entries."""
    if path.suffix.lower() == ".safetensors":
        arrays, meta = read_safetensors(path)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, {"metadata": meta}
    if obj is None:
        obj = load_torch_file(path, "weights")
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
    extra: dict[str, Any] = {k: v for k, v in obj.items() if not isinstance(v, (dict, torch.Tensor))}
    # timm's load_state_dict prefers the EMA weights; DeiT releases keep them under "model"
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(obj.get(key), dict) and obj[key] and all(isinstance(v, torch.Tensor) for v in obj[key].values()):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ArtifactError(f"{path} holds no tensors (keys {sorted(obj)[:6]}); expected a ViT state dict")
    return sd, extra


def _clean(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's clean_state_dict and checkpoint_filter_fn renames: DataParallel and
    torch.compile prefixes, DeiT-III's ``gamma_1/2``, ``pre_logits``, a 2-D patch weight."""
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        if k.startswith("pre_logits."):
            continue
        k = re.sub(r"\.gamma_([12])$", r".ls\1.gamma", k)
        out[k] = v.float() if v.is_floating_point() else v
    w = out.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 2 and "pos_embed" in out:  # very old timm: a Linear patch embedding
        d = w.shape[0]
        p = round(math.sqrt(w.shape[1] / 3))
        if 3 * p * p == w.shape[1]:
            out["patch_embed.proj.weight"] = w.reshape(d, -1, p, p)
    return out


# -- Hugging Face -------------------------------------------------------------------------
_HF_LAYER = [
    (r"layernorm_before\.", "norm1."),
    (r"layernorm_after\.", "norm2."),
    (r"attention\.output\.dense\.", "attn.proj."),
    (r"attention\.o_proj\.", "attn.proj."),
    (r"intermediate\.dense\.", "mlp.fc1."),
    (r"output\.dense\.", "mlp.fc2."),
    (r"mlp\.fc1\.", "mlp.fc1."),
    (r"mlp\.fc2\.", "mlp.fc2."),
]
_HF_QKV = re.compile(r"^(\d+)\.attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")


def hf_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``ViTForImageClassification`` / ``DeiTForImageClassification(WithTeacher)``
    keys (the names ``save_pretrained`` writes, and transformers 5's module names) -> timm's."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, v in sd.items():
        k = re.sub(r"^(vit|deit)\.", "", key)
        if k.startswith("pooler."):
            continue  # ViTModel's pooler: not used by the image classifiers
        simple = {
            "embeddings.cls_token": "cls_token",
            "embeddings.distillation_token": "dist_token",
            "embeddings.position_embeddings": "pos_embed",
            "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
            "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
            "layernorm.weight": "norm.weight",
            "layernorm.bias": "norm.bias",
            "classifier.weight": "head.weight",
            "classifier.bias": "head.bias",
            "cls_classifier.weight": "head.weight",
            "cls_classifier.bias": "head.bias",
            "distillation_classifier.weight": "head_dist.weight",
            "distillation_classifier.bias": "head_dist.bias",
        }
        if k in simple:
            out[simple[k]] = v
            continue
        m = re.match(r"^(?:encoder\.layer|layers)\.(.*)$", k)
        if m is None:
            raise ArtifactError(f"Hugging Face weight {key!r} is not part of a ViT/DeiT image classifier")
        rest = m.group(1)
        q = _HF_QKV.match(rest)
        if q:
            which = {"query": "q", "key": "k", "value": "v"}.get(q.group(2) or "", q.group(3))
            qkv.setdefault((int(q.group(1)), q.group(4)), {})[which] = v
            continue
        i, _, tail = rest.partition(".")
        for pattern, repl in _HF_LAYER:
            if re.match(pattern, tail):
                out[f"blocks.{i}.{re.sub(pattern, repl, tail, count=1)}"] = v
                break
        else:
            raise ArtifactError(f"Hugging Face weight {key!r} is not part of a ViT/DeiT image classifier")
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ArtifactError(f"Hugging Face layer {i} lacks some of query/key/value {kind}")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


# -- the architecture from shapes -------------------------------------------------------------
def heads_for_arch(arch: str) -> int:
    """Attention heads of a timm ViT/DeiT model name (``deit_tiny_patch16_224``, ``vit_base_patch16_384.augreg_in21k``)."""
    name = arch.split(".")[0].strip().lower()
    if name in TIMM_HEAD_EXCEPTIONS:
        return TIMM_HEAD_EXCEPTIONS[name]
    m = _ARCH.match(name)
    if m is None or m.group(2) not in TIMM_SIZES:
        raise EdgeVitError(
            f"--arch {arch!r} is not a timm ViT/DeiT model name (e.g. deit_tiny_patch16_224, vit_small_patch16_384); "
            "pass --num-heads N instead"
        )
    return TIMM_SIZES[m.group(2)][1]


def _square(n: int) -> int | None:
    r = math.isqrt(n) if n >= 0 else -1
    return r if r >= 1 and r * r == n else None


def describe_foreign(sd: dict[str, torch.Tensor]) -> str:
    """A guess at what a non-ViT state dict is, for the one-line refusal."""
    keys = list(sd)
    text = " ".join(keys[:400])
    for pattern, name in (
        (r"relative_position_bias_table|layers\.\d+\.blocks\.", "a Swin transformer"),
        (r"stages\.\d+\..*(dwconv|conv_dw)|downsample_layers", "a ConvNeXt"),
        (r"layer\d\.\d+\.conv\d|bn1\.", "a ResNet-style CNN"),
        (r"backbone\.|rpn|roi_heads|bbox|box_head", "a detector"),
        (r"\.attn\.relative_position|rel_pos", "a ViT with relative position embeddings"),
    ):
        if re.search(pattern, text):
            return f"{name} ({len(keys)} tensors, e.g. {keys[0]!r})"
    return f"{len(keys)} tensors, e.g. {keys[0]!r}" if keys else "no tensors"


SUPPORTED = (
    "edgevit imports timm ViT/DeiT/DeiT-III state dicts, Hugging Face ViT/DeiT image classifiers "
    "and ONNX image classifiers"
)


def check_vit(sd: dict[str, torch.Tensor]) -> None:
    """Refuse, in one line naming what was found, a state dict that is not a timm-layout ViT."""
    need = ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ArtifactError(f"found {describe_foreign(sd)}, not a ViT (no {missing[0]!r}); {SUPPORTED}")


def infer_config(sd: dict[str, torch.Tensor], num_heads: int, eps: float = TIMM_EPS) -> ViTConfig:
    """The :class:`ViTConfig` of a timm-layout ViT/DeiT state dict (see the module docstring)."""
    check_vit(sd)
    if "head.weight" not in sd:
        raise ArtifactError(
            "the weights have no classification head (head.weight): a feature extractor; fine-tune it with "
            "`edgevit train --init` (a new head is made for your classes)"
        )
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ArtifactError(f"patch_embed.proj.weight has shape {tuple(w.shape)}; edgevit needs square patches")
    dim, chans, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    class_token, dist = "cls_token" in sd, "dist_token" in sd
    reg = int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0
    prefix = int(class_token) + int(dist) + reg
    pos_len = int(sd["pos_embed"].shape[1])
    g_with, g_without = _square(pos_len - prefix), _square(pos_len)
    if prefix and g_with is not None:
        no_embed_class, grid = False, g_with  # timm's default when both would be square
    elif g_without is not None:
        no_embed_class, grid = True, g_without
    else:
        raise ArtifactError(f"pos_embed has {pos_len} positions for {prefix} prefix tokens: not a square patch grid")
    hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    ratio = hidden / dim
    if int(dim * ratio) != hidden:  # e.g. giant's 48/11: nudge so int(dim * ratio) gives hidden back
        ratio = (hidden + 0.5) / dim
    has_fc_norm = "fc_norm.weight" in sd
    if any(k.startswith("norm_pre.") for k in sd):
        raise ArtifactError("the weights have a pre-norm (norm_pre, CLIP-style ViT), which edgevit does not build")
    if "blocks.0.attn.qkv.weight" in sd and sd["blocks.0.attn.qkv.weight"].shape[0] != 3 * dim:
        raise ArtifactError("the attention's qkv weight is not 3 x width: not a timm ViT/DeiT attention")
    if num_heads < 1 or dim % num_heads:
        raise EdgeVitError(f"--num-heads {num_heads} does not divide the width {dim}")
    return ViTConfig(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=chans,
        num_classes=int(sd["head.weight"].shape[0]),
        embed_dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=ratio,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        layer_norm_eps=eps,
        class_token=class_token,
        dist_token=dist,
        reg_tokens=reg,
        no_embed_class=no_embed_class,
        # fc_norm exists only for pooled heads, and without a class token the head must pool
        # (class token + avg pool + no fc_norm would look like 'token': shapes cannot tell)
        global_pool="avg" if (has_fc_norm or not class_token) else "token",
        fc_norm=has_fc_norm,
        layer_scale="blocks.0.ls1.gamma" in sd,
        qk_norm="blocks.0.attn.q_norm.weight" in sd,
    )


def width_of(sd: dict[str, torch.Tensor]) -> int | None:
    w = sd.get("patch_embed.proj.weight")
    return int(w.shape[0]) if w is not None else None


def _heads(sd: dict[str, torch.Tensor], num_heads: int | None, arch: str | None, stored_arch: Any) -> int:
    check_vit(sd)
    if num_heads:
        return int(num_heads)
    name = arch or (stored_arch if isinstance(stored_arch, str) else None)
    if name:
        heads = heads_for_arch(name)
        m = _ARCH.match(name.split(".")[0].lower())
        want = TIMM_SIZES.get(m.group(2), (None,))[0] if m else None
        if want is not None and width_of(sd) not in (None, want):
            raise EdgeVitError(f"--arch {name} has width {want}, but the weights have width {width_of(sd)}")
        return heads
    d = width_of(sd) or 0
    guess = 3 if d == 192 else (16 if d >= 1280 else max(1, d // 64))
    raise EdgeVitError(
        "timm weights do not store the number of attention heads: pass --num-heads N or --arch NAME "
        f"(a timm model name such as deit_tiny_patch16_224; timm's ViT/DeiT of width {d} use {guess})"
    )


# -- preprocessing the sources state ----------------------------------------------------------
def _interp(value: Any) -> str | None:
    if isinstance(value, int):
        names = {2: "bilinear", 3: "bicubic"}
        if value not in names:
            raise ArtifactError(
                f"preprocessing resamples with PIL filter {value}; edgevit reproduces bilinear (2) and bicubic (3)"
            )
        return names[value]
    if value in ("bilinear", "bicubic"):
        return str(value)
    if value is None:
        return None
    raise ArtifactError(f"preprocessing interpolation {value!r}; edgevit reproduces bilinear and bicubic")


def preprocess_from_timm_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """Preprocess keywords from timm's ``pretrained_cfg`` (timm's eval transform)."""
    out: dict[str, Any] = {}
    size = cfg.get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 3:
        if size[1] != size[2]:
            raise ArtifactError(f"timm input size {size} is not square; edgevit models take square inputs")
        out["size"] = int(size[1])
    if cfg.get("mean") is not None:
        out["mean"] = tuple(float(v) for v in cfg["mean"])
    if cfg.get("std") is not None:
        out["std"] = tuple(float(v) for v in cfg["std"])
    if cfg.get("crop_pct") is not None:
        out["crop_pct"] = float(cfg["crop_pct"])
    if cfg.get("interpolation"):
        out["interpolation"] = _interp(cfg["interpolation"])
    mode = cfg.get("crop_mode", "center")
    if mode not in ("center", "squash"):
        raise ArtifactError(f"timm crop_mode {mode!r}; edgevit reproduces 'center' and 'squash'")
    out["resize_mode"] = "crop" if mode == "center" else "squash"
    return out


def preprocess_from_hf(pp: dict[str, Any]) -> dict[str, Any]:
    """Preprocess keywords from a Hugging Face ``preprocessor_config.json`` (ViT: squash;
    DeiT: squash then centre crop; ``shortest_edge``: shorter side then centre crop)."""
    out: dict[str, Any] = {}
    if pp.get("do_rescale", True) and abs(float(pp.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise ArtifactError(f"preprocessing rescales by {pp.get('rescale_factor')}; edgevit scales pixels by 1/255")
    if pp.get("do_normalize", True):
        if pp.get("image_mean") is not None:
            out["mean"] = tuple(float(v) for v in np.atleast_1d(pp["image_mean"]))
        if pp.get("image_std") is not None:
            out["std"] = tuple(float(v) for v in np.atleast_1d(pp["image_std"]))
    else:
        out["mean"], out["std"] = (0.0,), (1.0,)
    if "resample" in pp:
        out["interpolation"] = _interp(pp["resample"])
    size = pp.get("size")
    resize_mode, resized = "squash", None
    if isinstance(size, (int, float)):
        resized = int(size)
    elif isinstance(size, dict):
        if "shortest_edge" in size:
            resize_mode, resized = "crop", int(size["shortest_edge"])
        elif "height" in size and "width" in size:
            if size["height"] != size["width"]:
                raise ArtifactError(f"preprocessing resizes to {size}; edgevit models take square inputs")
            resized = int(size["height"])
    crop = pp.get("crop_size")
    if pp.get("do_center_crop") and crop is not None:
        c = int(crop) if isinstance(crop, (int, float)) else int(crop.get("height", 0))
        if isinstance(crop, dict) and crop.get("height") != crop.get("width"):
            raise ArtifactError(f"preprocessing crops {crop}; edgevit models take square inputs")
        out["size"] = c
        if resized:
            out["crop_pct"] = c / resized
    elif resized:
        out["size"] = resized
        out["crop_pct"] = 1.0
    if resized is not None:
        out["resize_mode"] = resize_mode
    return out


# -- the entry point ----------------------------------------------------------------------------
def _hf_folder(folder: Path, cfg: dict[str, Any], num_heads: int | None) -> ForeignWeights:
    model_type = cfg.get("model_type")
    arches = cfg.get("architectures") or []
    if model_type not in ("vit", "deit"):
        raise ArtifactError(
            f"{folder} is a Hugging Face {model_type or 'unknown'} model ({', '.join(arches) or 'no architectures'}); "
            f"{SUPPORTED} (model_type vit or deit)"
        )
    files = [folder / n for n in HF_WEIGHT_FILES if (folder / n).is_file()]
    if not files:
        raise ArtifactError(f"{folder} has config.json but no {' or '.join(HF_WEIGHT_FILES)}")
    raw, _ = _tensors(files[0])
    sd = hf_to_timm(raw)
    if cfg.get("hidden_act", "gelu") not in ("gelu",):
        raise ArtifactError(f"{folder}: activation {cfg.get('hidden_act')!r}; edgevit's ViT uses exact GELU")
    image_size = cfg.get("image_size", 224)
    if isinstance(image_size, (list, tuple)) and len(set(image_size)) != 1:
        raise ArtifactError(f"{folder}: image size {image_size} is not square; edgevit models take square inputs")
    heads = int(num_heads or cfg.get("num_attention_heads", 12))
    config = infer_config(sd, heads, eps=float(cfg.get("layer_norm_eps", HF_EPS)))
    names = None
    id2label = cfg.get("id2label")
    if isinstance(id2label, dict) and len(id2label) == config.num_classes:
        names = [str(id2label.get(str(i), id2label.get(i, i))) for i in range(config.num_classes)]
    pp: dict[str, Any] = {}
    pp_path = folder / "preprocessor_config.json"
    if pp_path.is_file():
        pp = preprocess_from_hf(json.loads(pp_path.read_text(encoding="utf-8")))
    return ForeignWeights(sd, config, "huggingface", folder, names, pp)


def read_weights(source: str | Path, num_heads: int | None = None, arch: str | None = None) -> ForeignWeights:
    """Read ``source`` (a weight file, a Hugging Face or timm hub folder, or an edgevit
    checkpoint) into timm's layout with its architecture.

    Args:
        source: ``.pth``/``.pt``/``.bin``/``.safetensors``, or a folder with ``config.json``.
        num_heads: attention heads (timm weights do not store them).
        arch: a timm model name of the ViT/DeiT family, for the head count.
    """
    path = Path(source)
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise ArtifactError(f"{path} is a folder without config.json; pass a weight file or a Hugging Face folder")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{cfg_path} is not valid JSON ({exc})") from exc
        if "architecture" in cfg and "model_type" not in cfg:  # timm's hub folder (save_for_hf)
            files = [path / n for n in HF_WEIGHT_FILES if (path / n).is_file()]
            if not files:
                raise ArtifactError(f"{path} has a timm config.json but no {' or '.join(HF_WEIGHT_FILES)}")
            raw, _ = _tensors(files[0])
            sd = _clean(raw)
            heads = (
                num_heads
                or (cfg.get("model_args") or {}).get("num_heads")
                or _heads(sd, None, arch or cfg["architecture"], None)
            )
            config = infer_config(sd, int(heads))
            names = cfg.get("label_names")
            pp = preprocess_from_timm_cfg(cfg.get("pretrained_cfg") or {})
            return ForeignWeights(sd, config, "timm", path, list(names) if names else None, pp)
        return _hf_folder(path, cfg, num_heads)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ArtifactError(f"{path}: edgevit reads weights from {', '.join(WEIGHT_SUFFIXES)} files or a folder")
    obj = None
    if path.suffix.lower() != ".safetensors":
        obj = load_torch_file(path, "weights")
        if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
            return from_edgevit_checkpoint(obj, path)
    raw, extra = _tensors(path, obj)
    if any(k.startswith(("vit.", "deit.", "embeddings.", "encoder.layer.")) for k in raw):
        sd = hf_to_timm(raw)  # a Hugging Face state dict saved on its own
        config = infer_config(sd, _heads(sd, num_heads, arch, None), eps=HF_EPS)
        return ForeignWeights(sd, config, "huggingface", path)
    sd = _clean(raw)
    config = infer_config(sd, _heads(sd, num_heads, arch, extra.get("arch")))
    return ForeignWeights(sd, config, "timm", path)


def from_edgevit_checkpoint(ckpt: dict[str, Any], path: Path) -> ForeignWeights:
    from edgevit.preprocess import Preprocess

    for key in ("model", "model_config", "preprocess", "class_names"):
        if key not in ckpt:
            raise ArtifactError(f"checkpoint {path} lacks {key!r}; it is incomplete, retrain")
    pre = Preprocess.from_dict(ckpt["preprocess"])
    pp = {
        "size": pre.size,
        "mean": pre.mean,
        "std": pre.std,
        "resize_mode": pre.resize_mode,
        "crop_pct": pre.crop_pct,
        "interpolation": pre.interpolation,
    }
    return ForeignWeights(
        dict(ckpt["model"]),
        ViTConfig.from_dict(ckpt["model_config"]),
        "edgevit",
        path,
        [str(c) for c in ckpt["class_names"]],
        pp,
        data=str(ckpt.get("data", "")),
    )


# -- adapting weights to another shape ------------------------------------------------------------
def resample_pos_embed(posemb: torch.Tensor, new_grid: int, num_prefix_tokens: int) -> torch.Tensor:
    """Position embeddings ``1 x (prefix + G*G) x D`` resampled to a ``new_grid`` square:
    the prefix tokens kept as they are, the grid resized bicubically with antialiasing when
    shrinking. The algorithm of timm's ``resample_abs_pos_embed`` (Apache-2.0,
    timm/layers/pos_embed.py), which timm applies when it loads weights at a new size."""
    import torch.nn.functional as F

    total = posemb.shape[1]
    old = _square(total - num_prefix_tokens)
    if old is None:
        raise ArtifactError(f"position embeddings of {total} tokens with {num_prefix_tokens} prefix: not a square grid")
    if old == new_grid:
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    d = posemb.shape[-1]
    grid = grid.float().reshape(1, old, old, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, d).to(posemb.dtype)
    return torch.cat([prefix, grid], dim=1)


def adapt_state_dict(
    sd: dict[str, torch.Tensor], old: ViTConfig, new: ViTConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``sd`` (for ``old``) made to load into ``new``: position embeddings resampled to the
    new patch grid, heads dropped when the class count differs (the model's fresh heads are
    kept). Returns the state dict and what was done."""
    keep = ("img_size", "num_classes", "drop_rate")
    if {k: v for k, v in old.to_dict().items() if k not in keep} != {
        k: v for k, v in new.to_dict().items() if k not in keep
    }:
        raise EdgeVitError("the initial weights are another architecture than the model to train")
    out, done = dict(sd), []
    if old.img_size != new.img_size:
        prefix = 0 if old.no_embed_class else old.num_prefix_tokens
        out["pos_embed"] = resample_pos_embed(sd["pos_embed"], new.grid_size, prefix)
        done.append(
            f"position embeddings resampled from a {old.grid_size}x{old.grid_size} to a {new.grid_size}x{new.grid_size} grid"
        )
    if old.num_classes != new.num_classes:
        for k in [k for k in out if k.startswith(("head.", "head_dist."))]:
            del out[k]
        done.append(f"new head for {new.num_classes} classes (the weights had {old.num_classes})")
    return out, done
