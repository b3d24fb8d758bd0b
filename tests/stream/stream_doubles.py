"""Test doubles for the stream tests: a tiny deterministic runner and scripted sources."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgevit.artifacts import ArtifactInfo
from edgevit.config import ViTConfig
from edgevit.preprocess import Preprocess
from edgevit.runtime import Model
from edgevit.stream import CaptureError, FrameResult, Reader, Source, Stream


class LinearRunner:
    """logits = x.flatten() @ W.T with a fixed random W; ``delay`` seconds per call
    stands in for a slow model; ``fail`` decides per batch to raise."""

    name = "test:linear"
    input_name = "input"
    output_names = ["logits"]  # noqa: RUF012 - a protocol attribute
    max_batch = None

    def __init__(
        self,
        size: int = 8,
        channels: int = 1,
        classes: int = 10,
        delay: float = 0.0,
        fail: Callable[[np.ndarray], bool] | None = None,
    ):
        rng = np.random.default_rng(0)
        self.w = rng.standard_normal((classes, channels * size * size)).astype(np.float32)
        self.delay = delay
        self.fail = fail
        self.calls: list[int] = []  # batch size of every call

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feed[self.input_name]
        self.calls.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None and self.fail(x):
            raise RuntimeError("injected inference failure")
        return [x.reshape(len(x), -1) @ self.w.T]

    def close(self) -> None:
        pass


def linear_model(delay: float = 0.0, channels: int = 1, **kw: object) -> Model:
    pre = Preprocess(size=8, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)
    info = ArtifactInfo(
        model_config=ViTConfig(in_chans=channels), preprocess=pre, class_names=[str(i) for i in range(10)]
    )
    return Model(LinearRunner(channels=channels, delay=delay, **kw), info)  # type: ignore[arg-type]


class _ListReader:
    def __init__(
        self, frames: list[np.ndarray], fps: float, fail_at: int | None, stall_at: int | None, release: threading.Event
    ):
        self.frames, self.fps, self.fail_at, self.stall_at, self.release = frames, fps, fail_at, stall_at, release
        self.i = 0

    def read(self) -> np.ndarray | None:
        if self.i == self.fail_at:
            raise CaptureError("injected capture failure")
        if self.i == self.stall_at:
            self.release.wait(30)  # blocks like a camera that stopped delivering
        time.sleep(1.0 / self.fps)
        frame = self.frames[self.i % len(self.frames)]
        self.i += 1
        return frame

    def close(self) -> None:
        pass


class ScriptedSource(Source):
    """A live source over ``frames`` (cycled) at ``fps``. Its first ``fail_opens`` opens
    raise; the first open blocks until ``open_release`` is set if ``hang_open``; the
    first reader raises at frame ``fail_at`` or blocks at frame ``stall_at``; later
    readers (reopens) behave."""

    def __init__(
        self,
        uri: str,
        frames: list[np.ndarray],
        fps: float = 100.0,
        fail_at: int | None = None,
        stall_at: int | None = None,
        fail_opens: int = 0,
        hang_open: bool = False,
    ):
        super().__init__(uri, live=True, fps=fps)
        self.frames, self.fail_at, self.stall_at = frames, fail_at, stall_at
        self.fail_opens, self.hang_open = fail_opens, hang_open
        self.opens = 0
        self.release = threading.Event()
        self.open_release = threading.Event()

    def open(self) -> Reader:
        self.opens += 1
        if self.opens <= self.fail_opens:
            raise CaptureError(f"injected open failure {self.opens}")
        first = self.opens == self.fail_opens + 1
        if first and self.hang_open:
            self.open_release.wait(30)  # an open that hangs, like a camera that accepts and says nothing
        return _ListReader(
            self.frames,
            self.fps or 100.0,
            self.fail_at if first else None,
            self.stall_at if first else None,
            self.release,
        )


def write_linear_onnx(path: str | Path, channels: int = 1) -> Path:
    """An ONNX file with edgevit metadata computing the same logits as :class:`LinearRunner`
    (for subprocess tests before/without the trained nano model)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    runner = LinearRunner(channels=channels)
    model = linear_model(channels=channels)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "wt"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.ascontiguousarray(runner.w.T), "wt")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    for k, v in model.info.to_metadata().items():
        proto.metadata_props.add(key=k, value=v)
    path = Path(path)
    onnx.save(proto, str(path))
    return path


def to_frames(images: np.ndarray, scale: int = 8) -> list[np.ndarray]:
    """8x8 gray digits -> (8*scale)^2 BGR frames (nearest neighbour, so area-resizing back is exact)."""
    import cv2

    out = []
    for img in images:
        big = cv2.resize(img[..., 0], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        out.append(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0, codec: str = "mp4v") -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {codec} to {path}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


ROOT = Path(__file__).resolve().parents[2]


def edgevit_command() -> list[str]:
    """`edgevit` from this checkout, as a subprocess command."""
    return [sys.executable, "-m", "edgevit"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for an `edgevit` subprocess: this checkout first on the path."""
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


class Run:
    """Iterate a stream on this thread, recording when each result came out."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self.t0 = 0.0
        self.times: list[tuple[float, FrameResult]] = []
        self.close_s = 0.0

    def until(self, done: Callable[[Run], bool], limit_s: float = 60.0) -> Run:
        with self.stream as s:
            self.t0 = time.monotonic()
            for r in s:
                self.times.append((time.monotonic() - self.t0, r))
                if done(self) or time.monotonic() - self.t0 > limit_s:
                    break
            t = time.monotonic()
        self.close_s = time.monotonic() - t
        return self

    def of(self, uri: str) -> list[float]:
        return [t for t, r in self.times if r.source == uri]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def max_gap(self, uri: str) -> float:
        ts = self.of(uri)
        return max(b - a for a, b in itertools.pairwise(ts)) if len(ts) > 1 else float("inf")

    def stats(self, uri: str):
        return next(s for s in self.stream.stats.sources if s.uri == uri)

    def events(self, uri: str, kind: str | None = None) -> list[str]:
        return [e.message for e in self.stream.events if e.source == uri and (kind is None or e.kind == kind)]
