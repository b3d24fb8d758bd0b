"""What the server does with a batch of requests, independent of Triton.

Triton's dynamic batcher hands the model several requests at once; each carries either
``images`` (uint8, ``N x H x W x C``, any size: the artifact's preprocessing resizes and
normalizes them) or ``tensor`` (float32 ``N x C x S x S``, already preprocessed). Every
request is checked on its own. The valid ones run through the model together, in one
backend call per ``batch_size`` chunk, and each gets back its own rows of ``probs``
(softmax over all classes) and ``top_k`` (class indices, best first). An invalid one gets
its :class:`InputError` in its place instead, alone: a NaN in one client's tensor must not
cost the other clients of the same batch their answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from edgevit.errors import InputError, first_line
from edgevit.metrics import softmax
from edgevit.runtime.base import Model, topk

IMAGES = "images"
TENSOR = "tensor"
PROBS = "probs"
TOP_K = "top_k"

Answer = Union[dict, InputError]
"""One request's answer: ``{PROBS: ..., TOP_K: ...}``, or the :class:`InputError` that refused it."""


@dataclass(frozen=True)
class CoreStats:
    requests: int  # answered with results
    refused: int  # answered with an InputError
    images: int
    backend_calls: int


class InferenceCore:
    """Turns a list of Triton requests into a list of answers with one :class:`Model`.

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
        self.refused = 0
        self.images = 0
        self.backend_calls = 0

    @property
    def stats(self) -> CoreStats:
        return CoreStats(self.requests, self.refused, self.images, self.backend_calls)

    def prepare(self, request: Mapping[str, np.ndarray]) -> np.ndarray:
        """One request -> a checked float32 NCHW batch. Raises a one-line :class:`InputError`."""
        present = [name for name in (IMAGES, TENSOR) if name in request and request[name] is not None]
        if len(present) != 1:
            raise InputError(
                f"the request has {'both' if present else 'neither'} '{IMAGES}' and '{TENSOR}'; "
                f"send exactly one: uint8 images N x H x W x C or a float32 N x C x H x W tensor"
            )
        name = present[0]
        x = np.asarray(request[name])
        if x.ndim == 0 or x.shape[0] == 0:
            raise InputError(f"'{name}' holds an empty batch; send at least one image")
        if x.size == 0:
            raise InputError(f"'{name}' of shape {x.shape} has no pixels; send images of at least 1 x 1")
        if name == IMAGES:
            if x.dtype != np.uint8 or x.ndim != 4:
                raise InputError(f"'{IMAGES}' must be uint8 N x H x W x C, got {x.dtype} {x.shape}")
            return self.model.preprocess(x)
        if x.dtype.kind != "f":
            raise InputError(f"'{TENSOR}' must be float32, got {x.dtype}")
        return self.model.preprocess.check_tensor(x)

    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[Answer]:
        """Answer every request, in order: results for the valid ones (run together), the
        :class:`InputError` for each invalid one."""
        answers: list[Answer] = []
        tensors = []
        for request in requests:
            try:
                x = self.prepare(request)
            except InputError as exc:
                # one line, whatever the message of a lower layer looked like
                answers.append(exc if "\n" not in str(exc) else InputError(first_line(exc)))
                continue
            answers.append({})
            tensors.append(x)
        self.refused += len(requests) - len(tensors)
        if not tensors:
            return answers
        x = tensors[0] if len(tensors) == 1 else np.concatenate(tensors, axis=0)
        probs = self.probabilities(x)
        idx, _ = topk(probs, self.top_k)
        self.requests += len(tensors)
        self.images += int(x.shape[0])
        start = 0
        rows = iter(t.shape[0] for t in tensors)
        for answer in answers:
            if isinstance(answer, InputError):
                continue
            n = next(rows)
            answer[PROBS] = probs[start : start + n]
            answer[TOP_K] = idx[start : start + n]
            start += n
        return answers

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities of a checked float32 NCHW batch, in backend-sized chunks."""
        logits = self.model.infer_chunked(x)
        self.backend_calls += -(-x.shape[0] // self.model.batch_size)
        return softmax(logits)
