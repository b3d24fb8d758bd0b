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
    gaps); ``timestamp`` is the wall-clock capture time (seconds since the epoch);
    ``latency_ms`` runs from capture to the result being ready.
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
            "batch": self.batch_size,
            "top_k": [
                {"index": int(i), "label": lab, "prob": round(float(p), 6)}
                for i, lab, p in zip(self.indices, self.labels, self.probs)
            ],
        }
