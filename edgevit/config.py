"""Model configuration, free of torch so the runtime can read it from artifacts."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from edgevit.errors import ArtifactError, EdgeVitError

BUILTIN_DATA = "digits"  # scikit-learn's bundled 8x8 digits; see edgevit.data
DEFAULT_TOP_K = 5  # classes reported per image by predict, the camera loop and the server alike


@dataclass(frozen=True)
class ViTConfig:
    """Everything needed to rebuild a :class:`edgevit.model.VisionTransformer`.

    The defaults are the ``nano`` preset, sized for the built-in 8x8 digits.
    """

    img_size: int = 8  # digits are 8x8; the model's input is square
    patch_size: int = 2  # 4x4 = 16 patches: enough tokens for attention to matter at 8 px
    in_chans: int = 1  # digits are grayscale
    num_classes: int = 10  # digits 0-9
    embed_dim: int = 64  # wide enough for 97%+ on digits, small enough for 2 CPU cores
    depth: int = 4  # four blocks train in about a minute on 2 cores
    num_heads: int = 4  # head dim 16
    mlp_ratio: float = 2.0  # half of ViT's 4.0: the nano model is data-limited, not width-limited
    qkv_bias: bool = True  # as in ViT/DeiT, so timm state dicts load
    drop_rate: float = 0.0  # dropout after projections; on digits augmentation regularizes better (measured)
    # Fields for ViTs made elsewhere (`edgevit import`, `train --init`). Each default is what
    # edgevit's own model always was, so the metadata of older artifacts (which lacks them)
    # still reads as the same model.
    layer_norm_eps: float = 1e-6  # timm and DeiT use 1e-6; Hugging Face ViT/DeiT 1e-12
    class_token: bool = True  # timm's register/gap models have none and pool the patch tokens
    dist_token: bool = False  # DeiT distilled: a second token and head; inference averages the two heads
    reg_tokens: int = 0  # timm's "register" tokens (vit_*_reg4_*), after the class token
    no_embed_class: bool = False  # DeiT-III: position embeddings cover the patches only, not the prefix tokens
    global_pool: str = "token"  # "token": the class token feeds the head; "avg": the mean of the patch tokens
    fc_norm: bool = False  # timm's pooled models: LayerNorm after pooling instead of before it
    layer_scale: bool = False  # DeiT-III / register models: learned per-channel scales on both residual branches
    qk_norm: bool = False  # LayerNorm on queries and keys per head (timm qk_norm=True)

    def __post_init__(self) -> None:
        problems = []
        if self.img_size <= 0 or self.patch_size <= 0:
            problems.append("img_size and patch_size must be positive")
        elif self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.in_chans not in (1, 3):
            problems.append(f"in_chans must be 1 or 3, got {self.in_chans}")
        if self.num_classes < 2:
            problems.append(f"num_classes must be at least 2, got {self.num_classes}")
        if self.num_heads <= 0 or self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.drop_rate < 1.0:
            problems.append(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if not 0.0 < self.layer_norm_eps < 1e-2:
            problems.append(f"layer_norm_eps must be in (0, 0.01), got {self.layer_norm_eps}")
        if self.global_pool not in ("token", "avg"):
            problems.append(f"global_pool must be 'token' or 'avg', got {self.global_pool!r}")
        elif self.global_pool == "token" and not self.class_token:
            problems.append("global_pool 'token' needs a class token")
        if self.dist_token and (not self.class_token or self.global_pool != "token" or self.reg_tokens):
            problems.append("a distillation token needs a class token, token pooling and no register tokens")
        if self.reg_tokens < 0:
            problems.append(f"reg_tokens must be >= 0, got {self.reg_tokens}")
        if self.depth < 1 or self.embed_dim < 1 or self.mlp_ratio <= 0:
            problems.append("depth, embed_dim and mlp_ratio must be positive")
        if problems:
            raise EdgeVitError("invalid model config: " + "; ".join(problems))

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens in front of the patch tokens."""
        return int(self.class_token) + int(self.dist_token) + self.reg_tokens

    @property
    def num_tokens(self) -> int:
        return self.num_patches + self.num_prefix_tokens

    @property
    def pos_embed_len(self) -> int:
        return self.num_patches + (0 if self.no_embed_class else self.num_prefix_tokens)

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ArtifactError(
                f"model config has unknown fields {unknown}; the artifact was made by a newer edgevit, upgrade it"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> ViTConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ViTConfig] = {
    # 8x8 to 32x32 inputs; trains in about a minute on 2 CPU cores.
    "nano": ViTConfig(),
    # DeiT-Tiny: 224 px, patch 16, dim 192, depth 12, 3 heads (timm: deit_tiny_patch16_224).
    "tiny": ViTConfig(
        img_size=224,
        patch_size=16,
        in_chans=3,
        num_classes=1000,
        embed_dim=192,
        depth=12,
        num_heads=3,
        mlp_ratio=4.0,
        drop_rate=0.0,
    ),
}


def preset(name: str, **overrides: Any) -> ViTConfig:
    """Return the named preset with ``overrides`` applied (e.g. ``num_classes``)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise EdgeVitError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
    return base.replace(**overrides) if overrides else base


# `edgevit train` without --img-size: the nano preset trains at the data's side up to this
# many pixels. Its cost grows with the square of the token count: a folder of 28 px images at
# patch 2 is 196 tokens, and 100 epochs took 36 minutes on 2 cores where 8 px digits take
# under a minute; at 16 px (64 tokens) it is about 6x faster and still reads digits and
# glyphs. Larger sides are one --img-size away, and huge photos no longer size the model.
NANO_MAX_DEFAULT_SIZE = 16
MAX_TRAIN_IMG_SIZE = 1024  # 4096 patches of 16 px: beyond this nothing trains on a workstation


def default_img_size(preset_name: str, image_side: int) -> int:
    """The training input side when none is given: the preset's own size for every preset
    but ``nano``, which follows the data's side between 8 and :data:`NANO_MAX_DEFAULT_SIZE`
    pixels (rounded down to its patch size)."""
    base = preset(preset_name)
    if preset_name != "nano":
        return base.img_size
    side = max(base.patch_size * 4, min(int(image_side), NANO_MAX_DEFAULT_SIZE))
    return side - side % base.patch_size


@dataclass
class TrainConfig:
    """How to train. Defaults are tuned for the ``nano`` preset on the built-in digits;
    :meth:`finetuning` gives the defaults for starting from pretrained weights."""

    data: str = BUILTIN_DATA  # "digits" or an ImageFolder-style directory
    preset: str = "nano"  # model size; see edgevit.config.PRESETS (ignored with init: the weights decide)
    img_size: int | None = None  # model input side; None: see default_img_size (with init: the weights' size)
    channels: int | None = None  # 1 or 3; None = the data's (gray folders and digits: 1, else 3)
    epochs: int = 100  # nano on digits: 97-98.5% test at 60 epochs across seeds, 99.3% at 100 (~0.45 s/epoch)
    batch_size: int = 64  # ~20 steps per epoch on 1.2k digits: enough updates, fast on 2 cores
    lr: float = 2e-3  # small ViTs on small data tolerate a high AdamW rate after warm-up
    weight_decay: float = 0.05  # DeiT's value; not applied to norms, biases, embeddings
    warmup_epochs: int = 5  # ViTs diverge without warm-up at this learning rate
    min_lr_ratio: float = 0.01  # cosine decays to 1% of lr, not to zero
    label_smoothing: float = 0.1  # DeiT's value; also keeps logits tame for INT8
    augment: bool = True  # in-memory data: random shifts; folders: random resized crops
    hflip: bool = False  # horizontal flips: right for photos, wrong for digits and text
    crop_scale: float = 0.35  # folders: random resized crops keep 35-100% of the image area
    # (timm's 8% suits ImageNet-scale training; on small fine-tuning sets it crops objects away)
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None = torch's default (all cores)
    workers: int | None = None  # image-folder loader processes; None: up to 4, not more than the cores
    init: str | None = None  # start from these weights: an edgevit checkpoint, timm/DeiT/Hugging Face weights
    init_num_heads: int | None = None  # attention heads of bare timm weights (they do not store them)
    init_arch: str | None = None  # or the timm model name they come from (deit_tiny_patch16_224)
    freeze_backbone: bool = False  # train only the head (a linear probe) on top of init's features

    def __post_init__(self) -> None:
        problems = []

        def number(name: str, lo: float, hi: float, lo_open: bool = False) -> None:
            v = getattr(self, name)
            try:
                ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
            except TypeError:
                ok = False
            if not ok:
                problems.append(
                    f"{name.replace('_', '-')} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v}"
                )

        number("epochs", 1, 100_000)
        number("batch_size", 1, 65_536)
        number("lr", 0.0, 1.0, lo_open=True)
        number("weight_decay", 0.0, 10.0)
        number("warmup_epochs", 0, 100_000)
        number("min_lr_ratio", 0.0, 1.0)
        number("label_smoothing", 0.0, 0.99)
        number("crop_scale", 0.01, 1.0)
        if self.img_size is not None:
            number("img_size", 1, MAX_TRAIN_IMG_SIZE)
        if self.channels not in (None, 1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be at least 1, got {self.threads}")
        if self.workers is not None and self.workers < 0:
            problems.append(f"workers must be 0 or more, got {self.workers}")
        if self.freeze_backbone and not self.init:
            problems.append("freeze-backbone needs pretrained weights (--init)")
        if problems:
            raise EdgeVitError("invalid training settings: " + "; ".join(problems))

    @classmethod
    def finetuning(cls, init: str, **overrides: Any) -> TrainConfig:
        """Defaults for starting from pretrained weights, with ``overrides`` applied."""
        return cls(**{**FINETUNE_DEFAULTS, "init": str(init), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fine-tuning from pretrained weights (`train --init`): the weights are already near a good
# solution, so the rate is 4x lower than from scratch (a high rate, pushed by the random new
# head's gradients, wipes out what the backbone knows), one warm-up epoch lets the new head
# settle before the backbone moves much, and a pretrained model converges in a fraction of the
# scratch schedule (30 epochs; nano 8 px -> 16 px digits: see tests/test_train.py).
FINETUNE_DEFAULTS: dict[str, Any] = {"lr": 5e-4, "warmup_epochs": 1, "epochs": 30}
