"""The one preprocessing definition shared by training, calibration, validation and the
runtime, and saved inside every artifact.

Images are uint8 arrays in RGB order, ``HxW`` (grayscale) or ``HxWxC``. They are resized
to the model's square input, scaled to [0, 1], normalized with the per-channel mean/std and
laid out NCHW. The resize is one of:

* edgevit's own (``interpolation="area"``, what every artifact before these fields meant):
  squash to the square with OpenCV, area interpolation when shrinking, bilinear when growing;
* Pillow-exact bilinear or bicubic (:mod:`edgevit.resample`), as timm and Hugging Face
  evaluate: ``resize_mode="crop"`` scales the shorter side to ``floor(size / crop_pct)`` and
  crops the centre (timm's eval transform, torchvision's offsets), ``"squash"`` resizes both
  sides to that size and crops the centre (Hugging Face's ViT: ``crop_pct`` 1; DeiT: 224/256).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from edgevit.errors import ArtifactError, InputError

ImageBatch = Union[Sequence[np.ndarray], np.ndarray]
RESIZE_MODES = ("squash", "crop")
INTERPOLATIONS = ("area", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 images become the model's float32 NCHW input.

    Args:
        size: side of the square model input, in pixels.
        channels: 1 (grayscale) or 3 (RGB).
        mean: per-channel mean of [0, 1]-scaled pixels, subtracted after scaling.
        std: per-channel standard deviation, divided after subtracting the mean.
        resize_mode: ``squash`` (both sides) or ``crop`` (shorter side, then the centre).
        crop_pct: the centre crop keeps this share of the resized side (timm's
            ``crop_pct``); 1: no crop.
        interpolation: ``area`` (edgevit's OpenCV resize), or Pillow's ``bilinear`` /
            ``bicubic``.
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Defaults = what artifacts without these fields always meant: OpenCV squash, no crop.
    resize_mode: str = "squash"
    crop_pct: float = 1.0
    interpolation: str = "area"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        if self.resize_mode not in RESIZE_MODES:
            raise ArtifactError(f"preprocessing resize mode {self.resize_mode!r}; choose one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ArtifactError(f"preprocessing interpolation {self.interpolation!r}; choose one of {INTERPOLATIONS}")
        if not (np.isfinite(self.crop_pct) and 0.0 < self.crop_pct <= 1.0):
            raise ArtifactError(f"preprocessing crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.channels not in (1, 3):
            raise ArtifactError(f"preprocessing has {self.channels} channels; edgevit supports 1 or 3")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ArtifactError("preprocessing mean/std must have one value per channel")
        if any(not np.isfinite(s) or s <= 0 for s in self.std):
            raise ArtifactError(f"preprocessing std must be positive, got {self.std}")
        if self.size <= 0:
            raise ArtifactError(f"preprocessing size must be positive, got {self.size}")

    # -- serialization -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layout"] = "NCHW"
        d["color"] = "GRAY" if self.channels == 1 else "RGB"
        d["scale"] = "1/255"
        d["resize"] = self.describe_resize()  # for people reading the metadata; not read back
        return d

    def describe_resize(self) -> str:
        if self.interpolation == "area":
            how = "cv2 INTER_AREA (shrink) / INTER_LINEAR (grow)"
        else:
            how = f"Pillow {self.interpolation}"
        if self.resize_mode == "crop":
            return f"shorter side to {self.stage_size} ({how}), centre crop {self.size}"
        if self.crop_pct < 1.0:
            return f"squash to {self.stage_size} ({how}), centre crop {self.size}"
        return f"squash to {self.size} ({how})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        try:
            return cls(
                size=int(data["size"]),
                channels=int(data["channels"]),
                mean=tuple(data["mean"]),
                std=tuple(data["std"]),
                resize_mode=str(data.get("resize_mode", "squash")),
                crop_pct=float(data.get("crop_pct", 1.0)),
                interpolation=str(data.get("interpolation", "area")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"preprocessing record is incomplete or malformed ({exc}); re-export the model"
            ) from exc

    # -- the transform -----------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    @property
    def stage_size(self) -> int:
        """The side images are resized to before the centre crop (``size`` without a crop):
        timm's ``floor(size / crop_pct)`` (the epsilon absorbs float error: 224 / (224/256))."""
        if self.crop_pct >= 1.0:
            return self.size
        return int(np.floor(self.size / self.crop_pct + 1e-6))

    def resize(self, images: ImageBatch) -> np.ndarray:
        """Check and resize uint8 images; return one ``N x size x size x C`` uint8 array."""
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4:
            if images.shape[1:] == (self.size, self.size, self.channels) and self.crop_pct >= 1.0:
                return images  # already a batch at model size (a no-op resize): nothing to copy
            images = list(images)
        elif isinstance(images, np.ndarray) and images.ndim in (2, 3):
            raise InputError(f"got one array of shape {images.shape}; pass a list of images or an N x H x W x C batch")
        if len(images) == 0:
            raise InputError("got an empty list of images; pass at least one")
        out = np.empty((len(images), self.size, self.size, self.channels), dtype=np.uint8)
        for i, img in enumerate(images):
            out[i] = self._resize_one(self._check_one(np.asarray(img), i))
        return out

    def _check_one(self, img: np.ndarray, index: int) -> np.ndarray:
        if img.dtype != np.uint8:
            raise InputError(
                f"image {index} has dtype {img.dtype}; pass uint8 images or a preprocessed float32 NCHW batch"
            )
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
            raise InputError(f"image {index} has shape {img.shape}; expected H x W or H x W x C")
        if img.shape[2] != self.channels:
            hint = (
                "cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)"
                if self.channels == 1
                else "cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)"
            )
            raise InputError(
                f"image {index} has {img.shape[2]} channels but the model expects {self.channels}; convert it first ({hint})"
            )
        return img

    def _scale(self, img: np.ndarray, w: int, h: int) -> np.ndarray:
        """Resize an H x W x C uint8 image to w x h with this preprocessing's interpolation."""
        if img.shape[:2] == (h, w):
            return img  # torchvision and Pillow skip a resize to the same size too
        if self.interpolation == "area":
            import cv2  # deferred: only needed when images are not at model size

            interp = cv2.INTER_AREA if (img.shape[0] > h or img.shape[1] > w) else cv2.INTER_LINEAR
            out = cv2.resize(img, (w, h), interpolation=interp)
            return out[:, :, None] if out.ndim == 2 else out
        from edgevit.resample import pil_resize

        return pil_resize(img, w, h, self.interpolation)

    def _first_step(self, img: np.ndarray) -> np.ndarray:
        """The resize before the centre crop: both sides (squash) or the shorter side to
        :attr:`stage_size` (torchvision's ``Resize(int)``: the long side truncated)."""
        s = self.stage_size
        h, w = img.shape[:2]
        if self.resize_mode == "squash":
            return self._scale(img, s, s)
        if w <= h:
            return self._scale(img, s, int(s * h / w))
        return self._scale(img, int(s * w / h), s)

    def _resize_one(self, img: np.ndarray) -> np.ndarray:
        img = self._first_step(img)
        if self.crop_pct >= 1.0 and self.resize_mode == "squash":
            return img
        h, w = img.shape[:2]
        top, left = round((h - self.size) / 2.0), round((w - self.size) / 2.0)  # torchvision: half to even
        return img[top : top + self.size, left : left + self.size]

    def stage(self, img: np.ndarray) -> np.ndarray:
        """The resize step alone, to a ``stage_size`` square, for data sets held in memory:
        preprocessing a staged image gives exactly the model input of the original (the
        resize of the second pass is a no-op and the two crops add up to torchvision's one)."""
        img = self._check_one(np.asarray(img), 0)
        img = self._first_step(img)
        s = self.stage_size
        h, w = img.shape[:2]
        if (h, w) == (s, s):
            return img
        # crop mode: the long side is cut to s so that its offset plus the second crop's
        # equals the one centre crop of the original
        want_top = round((h - self.size) / 2.0) - round((s - self.size) / 2.0)
        want_left = round((w - self.size) / 2.0) - round((s - self.size) / 2.0)
        return img[want_top : want_top + s, want_left : want_left + s]

    @functools.cached_property
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (scale, shift) with ``x / 255 - mean) / std == x * scale + shift``,
        computed once per preprocessing, not once per batch."""
        std = np.asarray(self.std, dtype=np.float32)
        scale = (1.0 / (255.0 * std)).astype(np.float32)
        shift = (-np.asarray(self.mean, dtype=np.float32) / std).astype(np.float32)
        return scale, shift

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NCHW, vectorized over the whole batch."""
        scale, shift = self._affine
        out = np.empty((batch.shape[0], self.channels, self.size, self.size), dtype=np.float32)
        # NHWC -> NCHW while converting: one pass per channel over contiguous output planes.
        for c in range(self.channels):
            np.multiply(batch[..., c], scale[c], out=out[:, c], dtype=np.float32)
            out[:, c] += shift[c]
        return out

    def check_tensor(self, x: np.ndarray) -> np.ndarray:
        """Validate an already preprocessed float NCHW batch."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise InputError(
                f"preprocessed input has shape {tuple(x.shape)}; the model expects N x {' x '.join(map(str, self.input_shape))}"
            )
        if x.shape[0] == 0:
            raise InputError("got an empty batch; pass at least one image")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise InputError(f"input contains {bad} NaN or Inf values; clean or drop those images before inference")
        return x

    def __call__(self, images: ImageBatch) -> np.ndarray:
        """Raw uint8 images (list or NHWC batch) or a float NCHW batch -> float32 NCHW."""
        if isinstance(images, np.ndarray) and images.dtype.kind == "f":
            return self.check_tensor(images)
        return self.normalize(self.resize(images))


def fit_preprocess(images: np.ndarray, size: int) -> Preprocess:
    """Preprocessing whose mean/std are those of ``images`` (uint8 NHWC, training split)."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InputError("fit_preprocess needs a uint8 N x H x W x C array")
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    std = np.maximum(x.std(axis=0), 1e-3)
    return Preprocess(size=size, channels=images.shape[-1], mean=tuple(x.mean(axis=0)), std=tuple(std))


def decode_image(data: bytes | np.ndarray, name: str = "image") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, BMP, ...) -> a uint8 frame, BGR ``H x W x 3`` or gray
    ``H x W``: the one image decoder of training, calibration, ``predict`` and the camera loop.

    16-bit images become 8-bit by ``round(v / 257)`` (65535 -> 255: the full scale maps to
    the full scale, whatever the image holds), alpha is dropped.
    """
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise InputError(f"{name} is not a readable image (corrupt or unsupported format); fix or remove it")
    if img.dtype == np.uint16:
        img = np.rint(img / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"{name} has {img.dtype} pixels; edgevit reads 8- and 16-bit images")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return img


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """An image file as the model sees it: uint8 RGB ``H x W x 3`` (``channels=3``) or gray
    ``H x W x 1`` (``channels=1``). See :func:`decode_image`."""
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read image {path} ({exc.strerror or exc})") from exc
    img = decode_image(data, str(path))
    if channels == 1:
        gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return gray[:, :, None]
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
