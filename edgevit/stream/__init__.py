"""Classify live video: cameras, streams, files and folders in; results, annotated
video and JSON lines out; batched inference on any artifact the runtime loads.

>>> from edgevit import runtime
>>> from edgevit.stream import Stream
>>> model = runtime.load("runs/digits-nano/model.int8.onnx")
>>> sources = ["synthetic://?frames=90", "video.mp4"]      # or csi://0, /dev/video0, rtsp://...
>>> sinks = ["out.mp4", "jsonl://results.jsonl"]           # or display://0, "-" (stdout)
>>> with Stream(model, sources, sinks, batch_size=8, top_k=3) as stream:
...     for r in stream:                                    # one FrameResult per frame
...         print(r.source, r.index, r.label, f"{r.prob:.2f}", f"{r.latency_ms:.1f} ms")
>>> print(stream.stats.format_summary())                    # FPS, latency p50/p99, drops
>>> model.close()

Live sources (cameras, network streams, ``synthetic://``) keep only their latest frame,
so results stay fresh when the model is slower than the camera; one that fails is
reopened with backoff while the others go on. Files and folders lose no frame and give
results in order. See :mod:`edgevit.stream.sources`, :mod:`edgevit.stream.sinks` and
:mod:`edgevit.stream.loop` for URIs and the design.
"""

from __future__ import annotations

from edgevit.stream.loop import Stream, StreamEvent
from edgevit.stream.overlay import draw_overlay
from edgevit.stream.results import FrameResult
from edgevit.stream.sinks import DisplaySink, JsonlSink, Sink, VideoSink, open_sink
from edgevit.stream.sources import (
    CaptureError,
    CorruptFrameError,
    FrameSource,
    ImageSource,
    Reader,
    Source,
    SyntheticSource,
    VideoCaptureSource,
    csi_pipeline,
    open_source,
)
from edgevit.stream.stats import StreamStats

__all__ = [
    "CaptureError",
    "CorruptFrameError",
    "DisplaySink",
    "FrameResult",
    "FrameSource",
    "ImageSource",
    "JsonlSink",
    "Reader",
    "Sink",
    "Source",
    "Stream",
    "StreamEvent",
    "StreamStats",
    "SyntheticSource",
    "VideoCaptureSource",
    "VideoSink",
    "csi_pipeline",
    "draw_overlay",
    "open_sink",
    "open_source",
]
