"""Frame conversion on the capture threads: a camera's frame (BGR, BGRA or gray uint8,
any size) -> the model's channels and input size, checked on the way. OpenCV releases
the GIL, so sources convert in parallel with each other and with inference."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevit.preprocess import Preprocess
from edgevit.stream.sources import CorruptFrameError


class FrameConverter:
    """Frame -> ``size x size x channels`` uint8 for ``preprocess`` (the model's).

    Raises :class:`CorruptFrameError` for a frame that cannot be used (wrong dtype, shape
    or channel count); the capture thread counts and skips it.
    """

    def __init__(self, preprocess: Preprocess):
        import cv2

        self.cv2 = cv2
        self.pre = preprocess
        self.size = (preprocess.size, preprocess.size)

    def __call__(self, frame: Any) -> np.ndarray:
        cv2 = self.cv2
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3) or frame.size == 0:
            what = (
                f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            )
            raise CorruptFrameError(f"unusable frame ({what}); sources must give uint8 BGR or grayscale images")
        ch = 1 if frame.ndim == 2 else frame.shape[2]
        if ch not in (1, 3, 4):
            raise CorruptFrameError(f"frame has {ch} channels; expected 1 (gray), 3 (BGR) or 4 (BGRA)")
        if self.pre.channels == 1:
            img = frame if ch == 1 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if ch == 3 else cv2.COLOR_BGRA2GRAY)
        else:
            code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}[ch]
            img = cv2.cvtColor(frame, code)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.shape[:2] == self.size:  # already at model size (the camera was set to it)
            if np.may_share_memory(img, frame):  # never a view of the reader's buffer
                img = img.copy()
            return img if img.ndim == 3 else img[:, :, None]
        return self.pre.resize([img])[0]
