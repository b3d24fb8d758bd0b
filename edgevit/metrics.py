"""Numbers that compare two models' outputs: numpy only, no runtime, no torch.

Used by validation, the quantizer's searches and the per-layer report alike, so every one
of them means the same thing by "agreement" or "mean KL".
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax as a new array (float32, or float64 for float64 input)."""
    z = exp_shifted(logits)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def exp_shifted(logits: np.ndarray) -> np.ndarray:
    """``exp(logits - rowmax)`` as a new array, float32 or wider (float64 stays float64);
    never overflows, ``logits`` untouched."""
    z = np.subtract(logits, logits.max(axis=-1, keepdims=True), dtype=np.result_type(logits.dtype, np.float32))
    np.exp(z, out=z)
    return z


def compare_logits(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """Agreement (percent of rows with the same top-1), mean KL(ref || cand) of the
    softmax outputs in nats, mean cosine of the logit vectors and max abs difference."""
    p = softmax(ref.astype(np.float64))
    q = softmax(cand.astype(np.float64))
    eps = 1e-12
    kl = np.sum(p * (np.log(p + eps) - np.log(q + eps)), axis=1)
    cos = np.sum(ref * cand, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1) + eps)
    return {
        "agreement": float(100.0 * (ref.argmax(1) == cand.argmax(1)).mean()),
        "mean_kl": float(np.mean(np.maximum(kl, 0.0))),
        "cosine": float(np.mean(cos)),
        "max_abs_logit_diff": float(np.abs(ref - cand).max()),
    }
