"""The backend-independent half of the runtime: a :class:`Model` that preprocesses,
batches and post-processes, on top of a :class:`Runner` that only runs tensors.

Runners take a feed dict as Polygraphy's runners do, but return a list: ``infer({input_name:
array}) -> [arrays]``, one per name in ``output_names`` (Polygraphy returns a name -> array
dict; a classifier has one output, so the list saves a lookup per call). They are context
managers. Anything that implements this (ONNX Runtime, OpenVINO, TensorRT, a test double)
gets the same ``predict`` API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from edgevit.artifacts import ArtifactInfo
from edgevit.config import DEFAULT_TOP_K
from edgevit.errors import BackendError, InputError
from edgevit.metrics import exp_shifted
from edgevit.preprocess import ImageBatch


class Runner(Protocol):
    """Runs a preprocessed float32 NCHW batch through one backend."""

    name: str  # backend name, e.g. "onnxruntime:CPUExecutionProvider"
    input_name: str
    output_names: list[str]
    max_batch: int | None  # largest batch one call takes (a TensorRT profile); None = any

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


@dataclass
class Prediction:
    """Top-k results for a batch of N images; ``indices[:, 0]`` is the top-1 class."""

    indices: np.ndarray  # (N, k) int64, best first
    probs: np.ndarray  # (N, k) float32, softmax probabilities of those classes
    labels: list[list[str]]  # (N, k) class names
    logits: np.ndarray  # (N, num_classes) float32, raw model outputs

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def top1(self) -> np.ndarray:
        return self.indices[:, 0]

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {
                "top_k": [
                    {"index": int(i), "label": lab, "prob": round(float(p), 6)} for i, lab, p in zip(idx, labs, prob)
                ]
            }
            for idx, labs, prob in zip(self.indices, self.labels, self.probs)
        ]


def topk(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row, best first: (indices int64, values).

    Up to 64 classes one stable sort of each row is cheapest; above, ``argpartition``
    first, then a sort of only those ``k``. The one top-k used by ``predict``, the camera
    loop and the server (plain fancy indexing: ``take_along_axis`` costs ~10 us a call).
    """
    rows, n = probs.shape
    k = max(1, min(k, n))
    r = np.arange(rows)[:, None]
    if n <= 64 or k == n:
        idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    else:
        cand = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        idx = cand[r, np.argsort(-probs[r, cand], axis=1, kind="stable")]
    idx = idx.astype(np.int64, copy=False)
    return idx, probs[r, idx]


def top_probs(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable classes of each row of ``logits`` and their softmax
    probabilities, best first: the post-processing of ``predict`` and the camera loop.

    Ranks ``exp(z - max)`` (the order of the probabilities) and normalizes only the ``k``
    kept values: fewer passes than ``topk(softmax(logits), k)``, same result.
    """
    z = exp_shifted(logits)
    idx, top = topk(z, k)
    top /= z.sum(axis=-1, keepdims=True)
    return idx, top


class Model:
    """A loaded artifact: raw images in, classes and probabilities out.

    Thread-safe: ``predict`` keeps no state between calls, and the runners it uses are
    safe to call from several threads (ONNX Runtime sessions are; the TensorRT runner
    serializes calls on its one stream).

    Args:
        runner: the backend that runs tensors.
        info: the artifact's self-description (preprocessing, class names, ...).
        path: where the artifact was loaded from.
        batch_size: the largest batch sent to the backend in one call; larger inputs
            are split. Capped by the runner's own ``max_batch`` (a TensorRT profile).
    """

    def __init__(self, runner: Runner, info: ArtifactInfo, path: str | Path | None = None, batch_size: int = 32):
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.runner = runner
        self.info = info
        self.path = Path(path) if path is not None else None
        self.preprocess = info.preprocess
        self.class_names = list(info.class_names)
        self.batch_size = min(batch_size, runner.max_batch) if runner.max_batch else batch_size

    @property
    def backend(self) -> str:
        return self.runner.name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return f"Model({self.path}, backend={self.backend}, precision={self.info.precision})"

    def logits(self, images: ImageBatch, batch_size: int | None = None) -> np.ndarray:
        """Raw logits for uint8 images (list or NHWC batch) or a float32 NCHW batch."""
        bs = self._batch_size(batch_size)
        if isinstance(images, (str, bytes, Path)):
            raise InputError(f"got a file name ({images!r}), not images; read it first (edgevit.preprocess.read_image)")
        if not hasattr(images, "__len__") or not hasattr(images, "__getitem__"):
            raise InputError(
                f"got {type(images).__name__}, not images; pass a list of uint8 images, an N x H x W x C uint8 batch "
                "or a float32 N x C x H x W batch"
            )
        is_tensor = isinstance(images, np.ndarray) and images.dtype.kind == "f"
        n = len(images)
        if n == 0:
            raise InputError("got no images; pass at least one")
        outs = []
        for start in range(0, n, bs):
            chunk = images[start : start + bs]
            x = self.preprocess.check_tensor(chunk) if is_tensor else self.preprocess(chunk)
            outs.append(self.infer_one_call(x))
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def infer_chunked(self, x: np.ndarray) -> np.ndarray:
        """Logits of an already preprocessed float32 NCHW batch of any length (no input checks),
        split into backend calls of at most ``batch_size`` images (:meth:`infer_one_call` each):
        for callers that built ``x`` themselves."""
        step = self.batch_size
        if len(x) <= step:
            return self.infer_one_call(x)
        return np.concatenate([self.infer_one_call(x[i : i + step]) for i in range(0, len(x), step)])

    def infer_one_call(self, x: np.ndarray) -> np.ndarray:
        """Logits of one already preprocessed batch in exactly one backend call: no splitting
        (the caller keeps ``x`` within the backend's batch limit), no input checks; the output
        shape is checked."""
        try:
            out = self.runner.infer({self.runner.input_name: x})[0]
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{self.backend} failed on a batch of shape {x.shape}: {exc}") from exc
        if out.shape != (x.shape[0], self.num_classes):
            raise BackendError(
                f"{self.backend} returned shape {out.shape} for a batch of {x.shape[0]}; "
                f"expected ({x.shape[0]}, {self.num_classes}): the artifact's metadata does not match its graph"
            )
        return np.asarray(out, dtype=np.float32)

    def predict(self, images: ImageBatch, top_k: int = DEFAULT_TOP_K, batch_size: int | None = None) -> Prediction:
        """Classify images; returns the ``top_k`` classes of each, best first (at most all
        classes; ``top_k`` below 1 is an :class:`~edgevit.errors.InputError`)."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise InputError(f"top_k must be a whole number of at least 1, got {top_k!r}")
        logits = self.logits(images, batch_size)
        idx, top = top_probs(logits, top_k)
        return Prediction(indices=idx, probs=top, labels=self.labels(idx), logits=logits)

    def labels(self, indices: np.ndarray) -> list[list[str]]:
        """Class names of an (N, k) array of class indices."""
        names = self.class_names
        return [[names[i] for i in row] for row in indices.tolist()]  # python ints index faster

    def _batch_size(self, batch_size: int | None) -> int:
        if batch_size is None:
            return self.batch_size
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        return min(batch_size, self.runner.max_batch) if self.runner.max_batch else batch_size

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
