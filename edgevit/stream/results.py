"""What the stream gives for each frame: :class:`FrameResult`, shared by the loop that
makes results and the sinks that write them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FrameResult:
    """The result of one frame.

    ``index`` is the frame's number in its source (frames dropped or skipped leave
    gaps). ``timestamp`` is the wall-clock time (seconds since the epoch) the source's
    reader returned the frame, decoded, and ``latency_ms`` runs from that moment to the
    result being ready (inference and top-k done, before the sinks). It leaves out what
    happened before the reader returned: exposure, encoding, network, jitter buffer and
    decoding (OpenCV's FFmpeg backend holds every H.264 frame back until the next one
    arrives: one frame interval). ``capture_timestamp`` is the frame's capture time by the
    sender's clock when the backend reports one (RTSP through FFmpeg, from RTCP sender
    reports: after the first report, as good as the camera's clock), else None.
    """

    source: str
    source_id: int
    index: int
    timestamp: float
    latency_ms: float
    indices: np.ndarray  # (k,) class indices, best first
    probs: np.ndarray  # (k,) probabilities
    labels: list[str]
    frame: np.ndarray = field(repr=False)  # the frame as captured (BGR)
    batch_size: int = 1
    capture_timestamp: float | None = None

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def prob(self) -> float:
        return float(self.probs[0])

    def to_record(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frame": self.index,
            "timestamp": round(self.timestamp, 6),
            "latency_ms": round(self.latency_ms, 3),
            "capture_timestamp": None if self.capture_timestamp is None else round(self.capture_timestamp, 6),
            "batch": self.batch_size,
            "top_k": [
                {"index": int(i), "label": lab, "prob": round(float(p), 6)}
                for i, lab, p in zip(self.indices, self.labels, self.probs)
            ],
        }
