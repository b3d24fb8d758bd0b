from __future__ import annotations

import pytest

from edgevit.config import PRESETS, ViTConfig, preset
from edgevit.errors import ArtifactError, EdgeVitError


def test_presets_have_the_documented_shapes():
    tiny = preset("tiny")
    assert (tiny.img_size, tiny.patch_size, tiny.embed_dim, tiny.depth, tiny.num_heads) == (224, 16, 192, 12, 3)
    assert tiny.num_tokens == 197  # 14 x 14 patches + class token
    nano = preset("nano")
    assert 8 <= nano.img_size <= 32 and nano.in_chans == 1
    assert set(PRESETS) >= {"nano", "tiny"}


def test_preset_overrides_and_round_trip():
    cfg = preset("nano", num_classes=3)
    assert cfg.num_classes == 3
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "bad",
    [dict(img_size=10, patch_size=4), dict(embed_dim=30, num_heads=4), dict(in_chans=2), dict(num_classes=1)],
)
def test_invalid_configs_are_refused_with_a_reason(bad):
    with pytest.raises(EdgeVitError, match="invalid model config"):
        ViTConfig(**bad)


def test_unknown_preset_and_unknown_fields():
    with pytest.raises(EdgeVitError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ArtifactError, match="unknown fields"):
        ViTConfig.from_dict({**ViTConfig().to_dict(), "flash": True})


def test_old_model_configs_still_read_and_mean_the_same_model():
    old = {  # the metadata of artifacts made before the fields for foreign ViTs
        "img_size": 8,
        "patch_size": 2,
        "in_chans": 1,
        "num_classes": 10,
        "embed_dim": 64,
        "depth": 4,
        "num_heads": 4,
        "mlp_ratio": 2.0,
        "qkv_bias": True,
        "drop_rate": 0.0,
    }
    cfg = ViTConfig.from_dict(old)
    assert cfg == preset("nano") and cfg.num_tokens == 17 and cfg.layer_norm_eps == 1e-6


@pytest.mark.parametrize(
    "bad",
    [
        dict(lr=float("nan")),
        dict(lr=-1.0),
        dict(epochs=0),
        dict(batch_size=0),
        dict(label_smoothing=1.5),
        dict(freeze_backbone=True),
    ],
)
def test_train_settings_are_checked_in_one_line(bad):
    from edgevit.config import TrainConfig

    with pytest.raises(EdgeVitError, match="invalid training settings") as e:
        TrainConfig(**bad)
    assert "\n" not in str(e.value)


def test_default_image_size_rule():
    from edgevit.config import default_img_size

    assert default_img_size("nano", 8) == 8
    assert default_img_size("nano", 28) == 16  # 28 px digits: 4x fewer tokens than at 28
    assert default_img_size("nano", 10000) == 16  # huge photos do not size the model
    assert default_img_size("tiny", 10000) == 224
