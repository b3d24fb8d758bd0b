"""Offline graph edits that make a ViT easier to quantize, on the ONNX initializers.

* SmoothQuant-style scale migration (Xiao et al., 2023) for each LayerNorm -> Linear
  pair (``norm1 -> attn.qkv``, ``norm2 -> mlp.fc1``): per channel ``j`` of the LayerNorm
  output, ``s_j = amax(y_j)^alpha / amax(W_j,:)^(1 - alpha)``; the LayerNorm scale and
  bias are divided by ``s`` and the rows of the next MatMul's ``[K, N]`` weight multiplied
  by it. ``(y / s) @ (diag(s) W) = y @ W``: the FP32 function is unchanged, the activation
  outliers move into the (per-channel quantized) weights, and the graph stays plain
  LayerNormalization + MatMul for TensorRT.
* bias correction (Nagel et al., 2019): the expected output shift caused by rounding a
  Linear's weights, ``E[x] @ (W_q - W)``, is subtracted from its bias.
* :func:`inject_outliers`: the inverse of smoothing with a large factor on a few channels,
  giving a model with the same function whose LayerNorm outputs carry the outliers trained
  ViTs have (for benchmarks and tests).

No torch: these edit ``onnx.ModelProto`` objects in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevit.errors import QuantizationError


@dataclass
class LayerNormPair:
    """A LayerNormalization whose output feeds only MatMuls with constant ``[K, N]`` weights."""

    norm: str  # LayerNormalization node name
    output: str  # its output tensor
    gamma: str  # scale initializer
    beta: str | None  # bias initializer
    matmuls: list[str]  # consumer MatMul node names
    weights: list[str]  # their weight initializers


def _inits(model: Any) -> dict[str, Any]:
    return {t.name: t for t in model.graph.initializer}


def _array(init: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def _store(init: Any, value: np.ndarray) -> None:
    from onnx import numpy_helper

    init.CopyFrom(numpy_helper.from_array(value.astype(_array(init).dtype), init.name))


def _use_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            counts[i] = counts.get(i, 0) + 1
    return counts


def find_layernorm_pairs(model: Any) -> list[LayerNormPair]:
    """Every LayerNorm -> MatMul pair whose weights can absorb a per-channel scale."""
    inits = _inits(model)
    uses = _use_counts(model)
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for n in model.graph.node:
        if n.op_type != "LayerNormalization" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), -1)
        y = n.output[0]
        users = consumers.get(y, [])
        if axis != -1 or y in outputs or not users:
            continue
        ok = all(
            u.op_type == "MatMul"
            and u.input[0] == y
            and u.input[1] in inits
            and _array(inits[u.input[1]]).ndim == 2
            and uses.get(u.input[1], 0) == 1
            for u in users
        )
        beta = n.input[2] if len(n.input) > 2 and n.input[2] else None
        if not ok or uses.get(n.input[1], 0) != 1 or (beta is not None and (beta not in inits or uses[beta] != 1)):
            continue
        pairs.append(LayerNormPair(n.name, y, n.input[1], beta, [u.name for u in users], [u.input[1] for u in users]))
    return pairs


def smoothing_scales(
    model: Any, channel_amax: dict[str, np.ndarray], alpha: float = 0.5, pairs: list[LayerNormPair] | None = None
) -> dict[str, np.ndarray]:
    """LayerNorm output tensor -> per-channel ``s`` from activation and weight maxima."""
    if not 0.0 <= alpha <= 1.0:
        raise QuantizationError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    inits = _inits(model)
    scales = {}
    for p in pairs if pairs is not None else find_layernorm_pairs(model):
        if p.output not in channel_amax:
            continue
        a = np.maximum(np.asarray(channel_amax[p.output], dtype=np.float64), 1e-5)
        w = np.max([np.abs(_array(inits[name])).max(axis=1) for name in p.weights], axis=0).astype(np.float64)
        s = a**alpha / np.maximum(w, 1e-5) ** (1.0 - alpha)
        s = np.clip(s, 1e-4, 1e4)
        scales[p.output] = s.astype(np.float32)
    return scales


def apply_channel_scales(model: Any, scales: dict[str, np.ndarray], pairs: list[LayerNormPair] | None = None) -> None:
    """Divide each pair's LayerNorm gamma/beta by ``s`` and multiply the MatMul weight rows
    by ``s`` (in place). ``s > 1`` shrinks the activations (smoothing); ``s < 1`` grows them."""
    inits = _inits(model)
    by_output = {p.output: p for p in (pairs if pairs is not None else find_layernorm_pairs(model))}
    for out, s in scales.items():
        p = by_output.get(out)
        if p is None:
            raise QuantizationError(f"{out!r} is not a LayerNorm output feeding MatMul weights; cannot fold scales")
        s = np.asarray(s, dtype=np.float64)
        _store(inits[p.gamma], _array(inits[p.gamma]) / s)
        if p.beta is not None:
            _store(inits[p.beta], _array(inits[p.beta]) / s)
        for w in p.weights:
            _store(inits[w], _array(inits[w]) * s[:, None])


def inject_outliers(model: Any, channels: int = 4, factor: float = 50.0, seed: int = 0) -> dict[str, list[int]]:
    """Scale ``channels`` LayerNorm output channels of every pair up by ``factor`` and the
    matching weight rows down (same function, outlier activations). Returns the channels."""
    rng = np.random.default_rng(seed)
    inits = _inits(model)
    pairs = find_layernorm_pairs(model)
    chosen = {}
    scales = {}
    for p in pairs:
        dim = _array(inits[p.gamma]).shape[0]
        idx = np.sort(rng.choice(dim, size=min(channels, dim), replace=False))
        s = np.ones(dim, dtype=np.float64)
        s[idx] = 1.0 / factor
        scales[p.output] = s
        chosen[p.output] = [int(i) for i in idx]
    apply_channel_scales(model, scales, pairs)
    return chosen


def weight_fake_quant(w: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric per-channel INT8 round trip of a weight, as ONNX Runtime's QDQ quantizer does."""
    w = w.astype(np.float32)
    red = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.abs(w).max(axis=red, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    return (np.clip(np.rint(w / scale), -127, 127) * scale).astype(np.float32)


def linear_weight_axis(model: Any, node: Any) -> tuple[str, int, bool] | None:
    """(weight initializer, output-channel axis, weight is [N, K]) of a MatMul/Gemm, or None."""
    inits = _inits(model)
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
        return None
    if node.op_type == "MatMul":
        return node.input[1], 1, False
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return node.input[1], 0 if trans_b else 1, bool(trans_b)


def bias_correct(model: Any, input_means: dict[str, np.ndarray]) -> list[str]:
    """Subtract ``E[x] @ (W_q - W)`` from the bias of each MatMul(+Add)/Gemm whose input
    mean is known (in place). Returns the corrected node names."""
    inits = _inits(model)
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    uses = _use_counts(model)
    done = []
    for n in model.graph.node:
        wa = linear_weight_axis(model, n)
        if wa is None or n.input[0] not in input_means:
            continue
        wname, axis, transposed = wa
        w = _array(inits[wname])
        if w.ndim != 2:
            continue
        dw = weight_fake_quant(w, axis) - w
        if transposed:
            dw = dw.T  # [K, N]
        mean = np.asarray(input_means[n.input[0]], dtype=np.float64)
        if mean.shape[0] != dw.shape[0]:
            continue
        shift = mean @ dw.astype(np.float64)  # [N]
        bias = None
        if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2] in inits:
            bias = n.input[2]
        elif n.op_type == "MatMul":
            users = consumers.get(n.output[0], [])
            if len(users) == 1 and users[0].op_type == "Add":
                other = [i for i in users[0].input if i != n.output[0]]
                if other and other[0] in inits and _array(inits[other[0]]).shape == shift.shape:
                    bias = other[0]
        if bias is None or uses.get(bias, 0) != 1:
            continue
        _store(inits[bias], _array(inits[bias]) - shift)
        done.append(n.name)
    return done
