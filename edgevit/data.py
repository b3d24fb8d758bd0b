"""Data sets as uint8 image arrays: the built-in digits, or any folder of images.

* ``digits`` (the default): scikit-learn's bundled 8x8 handwritten digits, read offline,
  10 classes, 1797 images, split 70/15/15 (train/val/test) with a fixed seed, stratified.
* a folder laid out one sub-folder per class (PNG/JPEG; torchvision's ImageFolder
  layout). With ``train/`` and ``val/`` (and optionally ``test/``) sub-folders those
  splits are used; ``val`` doubles as ``test`` when there is no ``test/``. Otherwise the
  images of each class are split 70/15/15 deterministically.

:func:`load_dataset` loads images once, brought to the model input by the resize step of
the model's preprocessing (:meth:`edgevit.preprocess.Preprocess.stage`: the result then
preprocesses exactly like the original), and keeps them in memory as ``N x S x S x C``
uint8: for calibration, validation and the digits. Training on a folder streams the images
from disk instead (:func:`scan_image_folder` lists them; ``edgevit.train`` reads them with
a DataLoader). This module needs no torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgevit.config import BUILTIN_DATA
from edgevit.errors import DataError, InputError

if TYPE_CHECKING:
    from edgevit.preprocess import Preprocess

BUILTIN = BUILTIN_DATA
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
SPLIT_SEED = 0  # fixed: the split must not move when the training seed does
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: np.ndarray  # N x H x W x C uint8, RGB or grayscale
    labels: np.ndarray  # N int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    """A data set with its three splits.

    Args:
        source: ``digits`` or the folder path, recorded in every artifact.
        class_names: one name per class, in label order.
        train, val, test: the splits.
    """

    source: str
    class_names: list[str]
    train: Split
    val: Split
    test: Split

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[3])

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)


def load_dataset(
    source: str | Path = BUILTIN,
    size: int | None = None,
    channels: int | None = None,
    preprocess: Preprocess | None = None,
) -> Dataset:
    """Load ``digits`` or an image folder.

    Args:
        source: ``digits`` or a folder path.
        size: resize folder images to ``size x size`` (default: the size of the first image,
            which must then be square). Digits are always 8x8; a different size resizes them.
        channels: 1 or 3 for folders; default: what the images are (1 when every sampled
            training image is grayscale, else 3). Digits are grayscale (a 3-channel model
            gets them as gray RGB).
        preprocess: a model's preprocessing: images are brought to its input by its own
            resize step (and its size and channels are used): what calibration and
            validation of an artifact want.
    """
    if preprocess is not None:
        size, channels = preprocess.size, preprocess.channels
        resizer = preprocess
    else:
        resizer = None
    if str(source) == BUILTIN:
        ds = load_digits()
        if channels == 3:
            ds = _map_images(ds, lambda a: np.repeat(a, 3, axis=-1))
        if resizer is not None:
            if (resizer.stage_size, resizer.stage_size) != ds.train.images.shape[1:3]:
                ds = _map_images(ds, lambda a: np.stack([resizer.stage(i) for i in a]))
        elif size is not None and size != ds.image_size:
            ds = _resize_dataset(ds, size)
        return ds
    return load_image_folder(Path(source), size=size, channels=channels, resizer=resizer)


def _map_images(ds: Dataset, fn: Callable[[np.ndarray], np.ndarray]) -> Dataset:
    def one(s: Split) -> Split:
        return Split(fn(s.images), s.labels)

    return Dataset(ds.source, ds.class_names, one(ds.train), one(ds.val), one(ds.test))


def load_digits() -> Dataset:
    """scikit-learn's bundled digits (no download), split 70/15/15 with a fixed seed."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise DataError("the built-in digits need scikit-learn: pip install 'edgevit[train]'") from exc
    bunch = sk_load_digits()
    # Pixel values are 0..16; map them onto the usual 0..255 range of uint8 images.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # N, 8, 8, 1
    labels = bunch.target.astype(np.int64)
    train_idx, val_idx, test_idx = _stratified_split(labels, seed=SPLIT_SEED)
    return Dataset(
        source=BUILTIN,
        class_names=[str(i) for i in range(10)],
        train=Split(images[train_idx], labels[train_idx]),
        val=Split(images[val_idx], labels[val_idx]),
        test=Split(images[test_idx], labels[test_idx]),
    )


def _stratified_split(
    labels: np.ndarray, seed: int, fractions: tuple[float, float] = (0.70, 0.15)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_train = round(len(idx) * fractions[0])
        n_val = round(len(idx) * fractions[1])
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass
class FolderFiles:
    """An image folder's files, not loaded: class names and ``(path, label)`` per split."""

    source: str
    class_names: list[str]
    splits: dict[str, list[tuple[Path, int]]]

    def labels(self, split: str) -> np.ndarray:
        return np.array([lab for _, lab in self.splits[split]], dtype=np.int64)


def scan_image_folder(root: Path) -> FolderFiles:
    """List an ImageFolder-style tree: ``root/<class>/*.png`` or ``root/{train,val[,test]}/<class>/*``
    (``val`` doubles as ``test`` when there is no ``test/``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; pass `digits` or a folder with one sub-folder per class")
    has_splits = (root / "train").is_dir() and (root / "val").is_dir()
    class_names = [p.name for p in _class_dirs(root / "train" if has_splits else root)]
    if len(class_names) < 2:
        raise DataError(
            f"{root} has {len(class_names)} class folder(s); a classifier needs at least two "
            f"(lay images out as {root}/<class>/<image>.png)"
        )
    class_index = {name: i for i, name in enumerate(class_names)}

    def files_of(base: Path) -> list[tuple[Path, int]]:
        out = []
        for cdir in _class_dirs(base):
            if cdir.name not in class_index:
                raise DataError(
                    f"{cdir} is a class not present in {root / 'train'}; every split needs the same classes"
                )
            out.extend((f, class_index[cdir.name]) for f in _images_in(cdir))
        return out

    if has_splits:
        split_files = {"train": files_of(root / "train"), "val": files_of(root / "val")}
        split_files["test"] = files_of(root / "test") if (root / "test").is_dir() else split_files["val"]
    else:
        all_files = files_of(root)
        split_files = {"train": [], "val": [], "test": []}
        for f, label in all_files:
            split_files[_hash_split(f.relative_to(root))].append((f, label))
    for name in ("train", "val"):
        if not split_files[name]:
            raise DataError(f"{root} has no {name} images (PNG/JPEG); add images or use train/ and val/ sub-folders")
    counts = np.bincount([lab for _, lab in split_files["train"]], minlength=len(class_names))
    if (counts == 0).any():
        empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
        raise DataError(f"{root}: classes {empty} have no training images; add images or remove those folders")
    if not split_files["test"]:
        split_files["test"] = split_files["val"]
    return FolderFiles(str(root), class_names, split_files)


def load_image_folder(
    root: Path, size: int | None = None, channels: int | None = None, resizer: Preprocess | None = None
) -> Dataset:
    """An ImageFolder-style tree (see :func:`scan_image_folder`) loaded into memory.

    ``channels`` None: 1 if the training images are grayscale (see :func:`image_channels`), else 3.
    ``resizer``: the preprocessing whose resize step brings images to the model input
    (default: edgevit's squash to ``size``).
    """
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    files = scan_image_folder(root)
    split_files = files.splits
    if channels is None:
        channels = image_channels([f for f, _ in split_files["train"]])
    if resizer is None:
        if size is None:
            first = _read_image(split_files["train"][0][0], channels)
            size = int(first.shape[0])
        from edgevit.preprocess import Preprocess

        resizer = Preprocess(size=size, channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels)
    splits = {name: _load_split(f, resizer) for name, f in split_files.items()}
    return Dataset(files.source, files.class_names, splits["train"], splits["val"], splits["test"])


def _hash_split(rel: Path) -> str:
    """Deterministic 70/15/15 split by a hash of the file's relative path: adding images
    never moves existing ones to another split."""
    h = int.from_bytes(hashlib.sha256(rel.as_posix().encode()).digest()[:4], "big") / 2**32
    return "train" if h < 0.70 else ("val" if h < 0.85 else "test")


def image_channels(files: list[Path], sample: int = 64) -> int:
    """1 if every one of up to ``sample`` images (spread over ``files``) is grayscale (one
    channel, or three equal ones), else 3: a folder of gray digits makes a 1-channel model."""
    from edgevit.preprocess import decode_image

    step = max(1, len(files) // sample)
    for path in files[::step][:sample]:
        try:
            img = decode_image(np.fromfile(str(path), dtype=np.uint8), str(path))
        except InputError as exc:
            raise DataError(str(exc)) from exc
        if img.ndim == 3 and not (
            np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
        ):
            return 3
    return 1


def _read_image(path: Path, channels: int) -> np.ndarray:
    """:func:`edgevit.preprocess.read_image`, with a bad file reported as a data-set problem."""
    from edgevit.preprocess import read_image

    try:
        return read_image(path, channels)
    except InputError as exc:
        raise DataError(str(exc)) from exc


def _load_split(files: list[tuple[Path, int]], resizer: Preprocess) -> Split:
    s, channels = resizer.stage_size, resizer.channels
    images = np.empty((len(files), s, s, channels), dtype=np.uint8)
    for i, (f, _) in enumerate(files):
        images[i] = resizer.stage(_read_image(f, channels))
    labels = np.array([lab for _, lab in files], dtype=np.int64)
    return Split(images, labels)


def _resize_dataset(ds: Dataset, size: int) -> Dataset:
    from edgevit.preprocess import Preprocess

    resizer = Preprocess(size=size, channels=ds.channels, mean=(0.0,) * ds.channels, std=(1.0,) * ds.channels)

    def rs(s: Split) -> Split:
        return Split(resizer.resize(s.images), s.labels)

    return Dataset(ds.source, ds.class_names, rs(ds.train), rs(ds.val), rs(ds.test))
