"""What the server does with a batch of requests, independent of Triton.

Triton's dynamic batcher hands the model several requests at once; each carries either
``images`` (uint8, ``N x H x W x C``, any size: the artifact's preprocessing resizes and
normalizes them) or ``tensor`` (float32 ``N x C x S x S``, already preprocessed). Every
request is checked on its own, the valid ones are run through the model together in one
backend call per ``batch_size`` chunk, and each request gets back its own rows of
``probs`` (softmax over all classes) and ``top_k`` (class indices, best first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgevit.errors import InputError
from edgevit.metrics import softmax
from edgevit.runtime.base import Model, topk

IMAGES = "images"
TENSOR = "tensor"
PROBS = "probs"
TOP_K = "top_k"


@dataclass(frozen=True)
class CoreStats:
    requests: int
    images: int
    backend_calls: int


class InferenceCore:
    """Turns a list of Triton requests into a list of responses with one :class:`Model`.

    Args:
        model: a loaded artifact (:func:`edgevit.runtime.load`).
        top_k: classes reported per image (capped at the number of classes).
    """

    def __init__(self, model: Model, top_k: int = 5):
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}")
        self.model = model
        self.top_k = min(int(top_k), model.num_classes)
        self.requests = 0
        self.images = 0
        self.backend_calls = 0

    @property
    def stats(self) -> CoreStats:
        return CoreStats(self.requests, self.images, self.backend_calls)

    def prepare(self, request: Mapping[str, np.ndarray], index: int = 0) -> np.ndarray:
        """One request -> a checked float32 NCHW batch. Raises :class:`InputError`."""
        present = [name for name in (IMAGES, TENSOR) if name in request and request[name] is not None]
        if len(present) != 1:
            raise InputError(
                f"request {index} has {'both' if present else 'neither'} '{IMAGES}' and '{TENSOR}'; "
                f"send exactly one: uint8 images N x H x W x C or a float32 N x C x H x W tensor"
            )
        name = present[0]
        x = np.asarray(request[name])
        if x.shape[0] == 0:
            raise InputError(f"request {index} has an empty batch; send at least one image")
        if name == IMAGES:
            if x.dtype != np.uint8 or x.ndim != 4:
                raise InputError(f"request {index}: '{IMAGES}' must be uint8 N x H x W x C, got {x.dtype} {x.shape}")
            return self.model.preprocess(x)
        if x.dtype.kind != "f":
            raise InputError(f"request {index}: '{TENSOR}' must be float32, got {x.dtype}")
        return self.model.preprocess.check_tensor(x)

    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Run every request; the first invalid one raises :class:`InputError` (Triton
        returns that message as the error of the requests it batched together)."""
        tensors = [self.prepare(r, i) for i, r in enumerate(requests)]
        counts = [t.shape[0] for t in tensors]
        x = tensors[0] if len(tensors) == 1 else np.concatenate(tensors, axis=0)
        probs = self.probabilities(x)
        idx, _ = topk(probs, self.top_k)
        self.requests += len(requests)
        self.images += int(x.shape[0])
        out = []
        start = 0
        for n in counts:
            out.append({PROBS: probs[start : start + n], TOP_K: idx[start : start + n]})
            start += n
        return out

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities of a checked float32 NCHW batch, in backend-sized chunks."""
        logits = self.model.infer_tensors(x)
        self.backend_calls += -(-x.shape[0] // self.model.batch_size)
        return softmax(logits)
