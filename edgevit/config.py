"""Model configuration, free of torch so the runtime can read it from artifacts."""

from __future__ import annotations

import dataclasses
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
        if problems:
            raise EdgeVitError("invalid model config: " + "; ".join(problems))

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1  # + class token

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


@dataclass
class TrainConfig:
    """How to train. Defaults are tuned for the ``nano`` preset on the built-in digits."""

    data: str = BUILTIN_DATA  # "digits" or an ImageFolder-style directory
    preset: str = "nano"  # model size; see edgevit.config.PRESETS
    img_size: int | None = None  # model input side; None = the preset's (folder images are resized to it)
    channels: int | None = None  # 1 or 3; None = the data's (gray folders and digits: 1, else 3)
    epochs: int = 100  # nano on digits: 97-98.5% test at 60 epochs across seeds, 99.3% at 100 (~0.45 s/epoch)
    batch_size: int = 64  # ~20 steps per epoch on 1.2k digits: enough updates, fast on 2 cores
    lr: float = 2e-3  # small ViTs on small data tolerate a high AdamW rate after warm-up
    weight_decay: float = 0.05  # DeiT's value; not applied to norms, biases, embeddings
    warmup_epochs: int = 5  # ViTs diverge without warm-up at this learning rate
    min_lr_ratio: float = 0.01  # cosine decays to 1% of lr, not to zero
    label_smoothing: float = 0.1  # DeiT's value; also keeps logits tame for INT8
    augment: bool = True  # random shifts by up to 1/8 of the side on half the images
    hflip: bool = False  # horizontal flips: right for photos, wrong for digits and text
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None = torch's default (all cores)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
