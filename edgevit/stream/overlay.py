"""The annotation drawn on frames for display and video sinks: top-1 label and
probability, the source's FPS and the frame's capture-to-result latency."""

from __future__ import annotations

import numpy as np

FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def draw_overlay(frame: np.ndarray, label: str, prob: float, fps: float, latency_ms: float) -> np.ndarray:
    """Return a BGR copy of ``frame`` with the result drawn in its top-left corner."""
    import cv2

    img = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 or frame.shape[2] == 1 else frame.copy()
    if img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    h, w = img.shape[:2]
    scale = max(0.3, min(h, w) / 480.0)
    thick = max(1, round(scale * 2))
    lines = [(f"{label} {prob:.0%}", 1.0), (f"{fps:.1f} FPS  {latency_ms:.1f} ms", 0.6)]
    y = 0
    pad = max(2, round(6 * scale))
    for text, rel in lines:
        s = scale * rel
        (tw, th), base = cv2.getTextSize(text, FONT, s, thick)
        top = y
        y += th + base + 2 * pad
        cv2.rectangle(img, (0, top), (min(w - 1, tw + 2 * pad), min(h - 1, y)), (0, 0, 0), thickness=-1)
        cv2.putText(img, text, (pad, y - pad - base), FONT, s, (255, 255, 255), thick, cv2.LINE_AA)
    return img
