"""The one preprocessing definition shared by training, calibration, validation and the
runtime, and saved inside every artifact.

Images are uint8 arrays in RGB order, ``HxW`` (grayscale) or ``HxWxC``. They are resized
to the model's square input (OpenCV, area interpolation when shrinking, bilinear when
growing), scaled to [0, 1], normalized with the per-channel mean/std and laid out NCHW.
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


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 images become the model's float32 NCHW input.

    Args:
        size: side of the square model input, in pixels.
        channels: 1 (grayscale) or 3 (RGB).
        mean: per-channel mean of [0, 1]-scaled pixels, subtracted after scaling.
        std: per-channel standard deviation, divided after subtracting the mean.
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
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
        d["resize"] = "cv2 INTER_AREA (shrink) / INTER_LINEAR (grow)"
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        try:
            return cls(
                size=int(data["size"]),
                channels=int(data["channels"]),
                mean=tuple(data["mean"]),
                std=tuple(data["std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"preprocessing record is incomplete or malformed ({exc}); re-export the model"
            ) from exc

    # -- the transform -----------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def resize(self, images: ImageBatch) -> np.ndarray:
        """Check and resize uint8 images; return one ``N x size x size x C`` uint8 array."""
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4:
            if images.shape[1:] == (self.size, self.size, self.channels):
                return images  # already a batch at model size: nothing to copy
            images = list(images)
        elif isinstance(images, np.ndarray) and images.ndim in (2, 3):
            raise InputError(f"got one array of shape {images.shape}; pass a list of images or an N x H x W x C batch")
        if len(images) == 0:
            raise InputError("got an empty list of images; pass at least one")
        out = np.empty((len(images), self.size, self.size, self.channels), dtype=np.uint8)
        for i, img in enumerate(images):
            out[i] = self._resize_one(np.asarray(img), i)
        return out

    def _resize_one(self, img: np.ndarray, index: int) -> np.ndarray:
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
        h, w = img.shape[:2]
        if (h, w) != (self.size, self.size):
            import cv2  # deferred: only needed when images are not at model size

            interp = cv2.INTER_AREA if (h > self.size or w > self.size) else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.size, self.size), interpolation=interp)
            if img.ndim == 2:
                img = img[:, :, None]
        return img

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
