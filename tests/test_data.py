from __future__ import annotations

import numpy as np
import pytest
from image_folders import make_image_folder

from edgevit.data import load_dataset, load_digits
from edgevit.errors import DataError


def test_digits_split_is_fixed_disjoint_and_stratified():
    a, b = load_digits(), load_digits()
    np.testing.assert_array_equal(a.test.images, b.test.images)
    assert (len(a.train), len(a.val), len(a.test)) == (1258, 269, 270)
    assert a.train.images.shape[1:] == (8, 8, 1) and a.train.images.dtype == np.uint8
    assert a.train.images.max() == 255
    # no image shared between train and test (the digits set has no exact duplicates across them)
    train_rows = {img.tobytes() for img in a.train.images}
    assert sum(img.tobytes() in train_rows for img in a.test.images) <= 2
    for split in (a.train, a.val, a.test):
        assert set(np.unique(split.labels)) == set(range(10))


def test_digits_resized_when_asked():
    ds = load_dataset("digits", size=16)
    assert ds.train.images.shape[1:] == (16, 16, 1)


def test_image_folder_with_train_and_val(tmp_path):
    make_image_folder(tmp_path, {"cat": 4, "dog": 3}, split="train")
    make_image_folder(tmp_path, {"cat": 2, "dog": 2}, split="val", seed=1)
    ds = load_dataset(tmp_path)
    assert ds.class_names == ["cat", "dog"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (7, 4, 4)
    assert ds.train.images.shape[1:] == (16, 16, 3)


def test_image_folder_without_splits_is_split_deterministically(tmp_path):
    make_image_folder(tmp_path, {"a": 30, "b": 30, "c": 30})
    ds1, ds2 = load_dataset(tmp_path, size=8), load_dataset(tmp_path, size=8)
    assert len(ds1.train) + len(ds1.val) + len(ds1.test) == 90
    assert len(ds1.train) > len(ds1.val) > 0
    np.testing.assert_array_equal(ds1.val.labels, ds2.val.labels)
    assert ds1.train.images.shape[1:] == (8, 8, 3)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    make_image_folder(tmp_path / "one", {"only": 5})
    with pytest.raises(DataError, match="at least two"):
        load_dataset(tmp_path / "one")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    with pytest.raises(DataError, match="no train images"):
        load_dataset(tmp_path / "empty")


def test_corrupt_image_is_named(tmp_path):
    make_image_folder(tmp_path, {"a": 20, "b": 20})
    bad = tmp_path / "a" / "zz_broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"zz_broken\.png is not a readable image"):
        load_dataset(tmp_path)


def test_channels_come_from_the_images(tmp_path):
    """Gray PNGs (or RGB ones whose three channels are equal) make a 1-channel data set;
    colour ones 3; ``channels`` overrides either way."""
    import cv2

    rng = np.random.default_rng(0)
    for kind in ("gray", "rgbgray", "colour"):
        for cls in ("a", "b"):
            d = tmp_path / kind / cls
            d.mkdir(parents=True)
            for i in range(8):
                g = rng.integers(0, 256, size=(12, 12), dtype=np.uint8)
                img = {
                    "gray": g,
                    "rgbgray": np.dstack([g, g, g]),
                    "colour": rng.integers(0, 256, (12, 12, 3), np.uint8),
                }
                cv2.imwrite(str(d / f"{i}.png"), img[kind])
    assert load_dataset(tmp_path / "gray").channels == 1
    assert load_dataset(tmp_path / "rgbgray").channels == 1
    assert load_dataset(tmp_path / "colour").channels == 3
    assert load_dataset(tmp_path / "gray", channels=3).channels == 3
    assert load_dataset(tmp_path / "colour", channels=1).channels == 1


def test_16_bit_images_are_read_by_their_full_scale(tmp_path):
    """One decoder for training and predict: a 16-bit PNG maps 65535 -> 255 (not by its own max)."""
    import cv2

    from edgevit.preprocess import read_image

    img = np.full((4, 4), 32896, np.uint16)  # half scale
    cv2.imwrite(str(tmp_path / "x.png"), img)
    assert read_image(tmp_path / "x.png", 1).ravel().tolist() == [128] * 16
    assert read_image(tmp_path / "x.png", 3).shape == (4, 4, 3)
