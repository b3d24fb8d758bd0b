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
