from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevit.errors import ArtifactError, InputError
from edgevit.preprocess import Preprocess, fit_preprocess

RGB = Preprocess(size=16, channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
GRAY = Preprocess(size=8, channels=1, mean=(0.3,), std=(0.4,))


def test_normalize_is_the_documented_formula_in_nchw():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    out = RGB(batch)
    expected = (batch.astype(np.float64) / 255.0 - np.array(RGB.mean)) / np.array(RGB.std)
    assert out.dtype == np.float32 and out.shape == (5, 3, 16, 16)
    np.testing.assert_allclose(out, expected.transpose(0, 3, 1, 2), atol=1e-5)


def test_any_size_images_are_resized_and_list_equals_batch():
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    small = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    out = RGB([big, small])
    assert out.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(RGB([big])[0], out[0])


def test_grayscale_accepts_hw_and_hw1():
    img = np.full((8, 8), 200, dtype=np.uint8)
    np.testing.assert_array_equal(GRAY([img]), GRAY([img[:, :, None]]))


def test_wrong_channel_count_says_how_to_convert():
    with pytest.raises(InputError, match=r"3 channels but the model expects 1.*cvtColor"):
        GRAY([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(InputError, match="1 channels but the model expects 3"):
        RGB([np.zeros((16, 16), np.uint8)])


def test_float_tensors_are_checked_for_shape_and_nan():
    x = np.zeros((2, 1, 8, 8), np.float32)
    assert GRAY(x) is not None
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        GRAY(x)
    with pytest.raises(InputError, match="shape"):
        GRAY(np.zeros((2, 3, 8, 8), np.float32))
    bad = np.zeros((1, 1, 8, 8), np.float64)
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        GRAY(bad)


def test_bad_dtypes_and_empty_inputs():
    with pytest.raises(InputError, match="dtype"):
        GRAY([np.zeros((8, 8), np.int32)])
    with pytest.raises(InputError, match="empty"):
        GRAY([])
    with pytest.raises(InputError, match="one array"):
        GRAY(np.zeros((8, 8), np.uint8))


def test_round_trip_and_bad_records():
    assert Preprocess.from_dict(RGB.to_dict()) == RGB
    with pytest.raises(ArtifactError, match="incomplete"):
        Preprocess.from_dict({"size": 8})
    with pytest.raises(ArtifactError, match="positive"):
        Preprocess(size=8, channels=1, mean=(0.0,), std=(0.0,))


def test_fit_preprocess_measures_the_training_images():
    imgs = np.stack([np.full((4, 4, 1), v, np.uint8) for v in (0, 255)])
    pre = fit_preprocess(imgs, size=4)
    assert pre.mean == pytest.approx((0.5,)) and pre.std == pytest.approx((0.5,))


def test_training_and_runtime_see_the_same_tensor(nano_artifacts, digits):
    """The tensor the training loop feeds torch equals what the runtime feeds the ONNX
    model for the same uint8 images: one preprocessing definition, saved in the artifact."""
    from edgevit import runtime
    from edgevit.train import load_checkpoint

    ckpt = load_checkpoint(nano_artifacts.checkpoint)
    train_pre = Preprocess.from_dict(ckpt["preprocess"])
    images = digits.test.images[:16]
    train_tensor = torch.from_numpy(train_pre(images))  # exactly what train.py does
    with runtime.load(nano_artifacts.int8_onnx) as model:
        assert model.preprocess == train_pre
        np.testing.assert_array_equal(model.preprocess(images), train_tensor.numpy())
        # and predicting raw images equals predicting that tensor
        np.testing.assert_array_equal(model.logits(images), model.logits(train_tensor.numpy()))


def _photo_like(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients, edges and a little noise: what resampling differences show on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / (5 + c) + y / (7 + 2 * c)) for c in range(3)], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 2] = (240, 30, 60)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _timm_eval_with_pillow(img: np.ndarray, size: int, crop_pct: float, resample: int) -> np.ndarray:
    """timm's eval transform as torchvision runs it on a PIL image: Resize(floor(size /
    crop_pct)) of the shorter side, then CenterCrop(size) (round half to even)."""
    import math

    from PIL import Image

    scale = math.floor(size / crop_pct)
    h, w = img.shape[:2]
    nh, nw = (int(scale * h / w), scale) if w <= h else (scale, int(scale * w / h))
    out = np.asarray(Image.fromarray(img).resize((nw, nh), resample))
    top, left = round((nh - size) / 2.0), round((nw - size) / 2.0)
    return out[top : top + size, left : left + size]


@pytest.mark.parametrize("shape", [(300, 400), (480, 640), (500, 333), (224, 224), (97, 211)])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
def test_crop_preprocessing_reproduces_timms_eval_transform(shape, interp):
    pytest.importorskip("PIL")
    pre = Preprocess(
        size=224, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="crop", crop_pct=0.875, interpolation=interp
    )
    img = _photo_like(*shape, seed=shape[0])
    ref = _timm_eval_with_pillow(img, 224, 0.875, 3 if interp == "bicubic" else 2)
    got = pre.resize([img])[0]
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1  # the bar; Pillow 13: exactly 0
    # staged (the data sets' in-memory form) preprocesses to the very same pixels
    assert np.array_equal(pre.resize([pre.stage(img)])[0], got)


def test_old_metadata_means_opencv_squash():
    old = {
        "size": 8,
        "channels": 1,
        "mean": [0.3],
        "std": [0.2],
        "resize": "cv2 INTER_AREA (shrink) / INTER_LINEAR (grow)",
    }
    pre = Preprocess.from_dict(old)
    assert (pre.resize_mode, pre.crop_pct, pre.interpolation) == ("squash", 1.0, "area")
    big = np.random.default_rng(0).integers(0, 256, (40, 40, 1), dtype=np.uint8)
    import cv2

    assert np.array_equal(pre.resize([big])[0][:, :, 0], cv2.resize(big, (8, 8), interpolation=cv2.INTER_AREA))
