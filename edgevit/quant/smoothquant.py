"""SmoothQuant scale migration (Xiao et al., 2023), folded into the ONNX initializers.

For each LayerNorm whose output reaches only weighted ops (``norm1 -> attn.qkv`` or
separate ``q``/``k``/``v``, ``norm2 -> mlp.fc1``, the final ``norm -> [class token] ->
head``): per channel ``j`` of the activation entering those ops,
``s_j = amax(x_j)^alpha / amax(W_j)^(1 - alpha)``; the LayerNorm's scale and bias are
divided by ``s`` and the matching input rows (or columns) of every weight multiplied by it.
``(y / s) @ (diag(s) W) = y @ W``: the FP32 function is unchanged, the activation outliers
move into the (per-channel quantized) weights, and the graph stays plain LayerNorm +
MatMul/Gemm for TensorRT.

Between the LayerNorm and the weighted op only ops that keep the channel (last) axis
where it is may stand: ``Gather``/``Slice`` on another axis (the class token picked for the
head), ``Squeeze``/``Unsqueeze``/``Identity``; ``Shape`` may read the LayerNorm output too
(timm and Hugging Face exports size their reshapes from it: a shape does not change when
the values are scaled). The LayerNorm may be the ``LayerNormalization`` op or its
decomposed form ending in ``Mul(gamma) -> Add(beta)``. A gamma or beta initializer that
several LayerNorms share (exporters merge equal tensors) gets a private copy before it is
scaled.

:func:`inject_outliers` is the inverse with a large factor on a few channels: a model with
the same function whose LayerNorm outputs carry the outliers trained ViTs have (for
benchmarks and tests).

No torch: these edit ``onnx.ModelProto`` objects in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevit.errors import QuantizationError
from edgevit.quant import graph as G

# Ops that pass channel j of their input to channel j of their output (last axis untouched).
_CHANNEL_KEEPING = ("Identity", "Squeeze", "Unsqueeze", "Gather", "Slice")


@dataclass
class LayerNormPair:
    """A LayerNorm whose output reaches only weighted ops whose weights can absorb a
    per-channel scale.

    Args:
        norm: the LayerNorm node (``LayerNormalization``, or the ``Add`` ending a decomposed one).
        output: the LayerNorm's output tensor.
        gamma, beta: its scale and bias initializers (``beta`` may be None).
        inputs: the activation tensors entering the weighted ops (the output itself, or the
            class token gathered from it): where SmoothQuant's statistic is measured.
        layers: the weighted nodes.
        weights: their weight initializers.
        weight_in_axes: per weight, the axis of its input channels (0 for ``[K, N]``, 1 for
            a Gemm's ``[N, K]`` with ``transB=1``).
        gamma_node, beta_node: the nodes that read gamma and beta (the LayerNorm, or the
            decomposed form's ``Mul`` and ``Add``), to give them private copies.
    """

    norm: str
    output: str
    gamma: str
    beta: str | None
    inputs: list[str]
    layers: list[str]
    weights: list[str]
    weight_in_axes: list[int]
    gamma_node: str = ""
    beta_node: str = ""


def _affine(
    node: Any, prod: dict[str, Any], inits: dict[str, Any], uses: dict[str, int]
) -> tuple[str, str | None, str, str] | None:
    """(gamma, beta, gamma's node, beta's node) of a LayerNorm ending at ``node``: 1-D
    initializers (shared ones are copied before scaling, see :func:`apply_channel_scales`)."""

    def vector(name: str) -> bool:
        return name in inits and len(inits[name].dims) == 1

    if node.op_type == "LayerNormalization":
        if G.int_attr(node, "axis", -1) != -1 or len(node.input) < 2 or not vector(node.input[1]):
            return None
        beta = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if beta is not None and not vector(beta):
            return None
        return node.input[1], beta, node.name, node.name
    if node.op_type != "Add":  # decomposed: ... Div -> Mul(gamma) -> Add(beta)
        return None
    beta = next((i for i in node.input if vector(i)), None)
    other = next((i for i in node.input if i != beta), None)
    mul = prod.get(other) if other else None
    if beta is None or mul is None or mul.op_type != "Mul" or uses.get(other, 0) != 1:
        return None
    gamma = next((i for i in mul.input if vector(i)), None)
    normed = prod.get(next((i for i in mul.input if i != gamma), ""))
    if gamma is None or normed is None or normed.op_type != "Div":
        return None
    return gamma, beta, mul.name, node.name


def _channel_keeping(node: Any, inits: dict[str, Any]) -> bool:
    if node.op_type not in _CHANNEL_KEEPING:
        return False
    if node.op_type in ("Gather", "Slice"):
        axis = G.int_attr(node, "axis", 0)
        if node.op_type == "Slice":  # axes is input 3 (opset >= 10)
            if len(node.input) < 4 or node.input[3] not in inits:
                return False
            axes = G.to_array(inits[node.input[3]]).reshape(-1)
            return bool(len(axes)) and all(int(a) != -1 for a in axes) and _not_last(axes)
        return axis != -1 and _not_last([axis])
    return True


def _not_last(axes: Any) -> bool:
    # without the rank we cannot tell whether a positive axis is the last one; a ViT's tokens
    # are [B, N, C], and the only axes moved before a weighted op are 0 (batch) and 1 (tokens)
    return all(int(a) in (0, 1) for a in axes)


def find_layernorm_pairs(model: Any) -> list[LayerNormPair]:
    """Every LayerNorm whose output can hand a per-channel scale to the next weights."""
    inits = G.initializers(model)
    uses = G.use_counts(model)
    cons = G.consumers(model)
    prod = G.producers(model)
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for n in model.graph.node:
        affine = _affine(n, prod, inits, uses)
        if affine is None:
            continue
        y = n.output[0]
        if y in outputs:
            continue
        shared = [(v, node) for v, node in ((affine[0], affine[2]), (affine[1], affine[3])) if v and uses.get(v, 0) > 1]
        if any(not node for _, node in shared):
            continue  # a shared gamma/beta on a nameless node cannot be given its own copy
        # follow the channel-keeping ops to the weighted ops
        frontier, layers, inputs, weights, axes, ok = [y], [], [], [], [], True
        while frontier and ok:
            t = frontier.pop()
            users = cons.get(t, [])
            if not users or t in outputs:
                ok = False
                break
            for u in users:
                if u.op_type == "Shape":
                    continue  # reads only the shape, which scaling keeps
                if u.input[0] != t:
                    ok = False
                elif u.op_type in ("MatMul", "Gemm"):
                    lw = G.linear_weight(model, u, inits)
                    if lw is None or uses.get(lw[0], 0) != 1:
                        ok = False
                        continue
                    layers.append(u.name)
                    inputs.append(t)
                    weights.append(lw[0])
                    axes.append(1 if lw[2] else 0)
                elif _channel_keeping(u, inits):
                    frontier.append(u.output[0])
                else:
                    ok = False
        if ok and layers:
            pairs.append(
                LayerNormPair(
                    n.name,
                    y,
                    affine[0],
                    affine[1],
                    list(dict.fromkeys(inputs)),
                    layers,
                    weights,
                    axes,
                    gamma_node=affine[2],
                    beta_node=affine[3],
                )
            )
    return pairs


def smoothing_scales(
    model: Any, channel_amax: dict[str, np.ndarray], alpha: float = 0.5, pairs: list[LayerNormPair] | None = None
) -> dict[str, np.ndarray]:
    """LayerNorm output tensor -> per-channel ``s`` from activation and weight maxima.

    ``channel_amax`` maps each pair's input tensors (:attr:`LayerNormPair.inputs`) to their
    per-channel absolute maxima; a pair with several inputs takes the largest.
    """
    if not 0.0 <= alpha <= 1.0:
        raise QuantizationError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    inits = G.initializers(model)
    scales = {}
    for p in pairs if pairs is not None else find_layernorm_pairs(model):
        if any(t not in channel_amax for t in p.inputs):
            continue
        a = np.max([np.asarray(channel_amax[t], dtype=np.float64) for t in p.inputs], axis=0)
        a = np.maximum(a, 1e-5)
        w = np.max(
            [np.abs(G.to_array(inits[name])).max(axis=1 - ax) for name, ax in zip(p.weights, p.weight_in_axes)],
            axis=0,
        ).astype(np.float64)
        s = a**alpha / np.maximum(w, 1e-5) ** (1.0 - alpha)
        scales[p.output] = np.clip(s, 1e-4, 1e4).astype(np.float32)
    return scales


def apply_channel_scales(model: Any, scales: dict[str, np.ndarray], pairs: list[LayerNormPair] | None = None) -> None:
    """Divide each pair's LayerNorm gamma/beta by ``s`` and multiply the weights' input
    channels by it (in place). ``s > 1`` shrinks the activations (smoothing); ``s < 1``
    grows them."""
    inits = G.initializers(model)
    by_output = {p.output: p for p in (pairs if pairs is not None else find_layernorm_pairs(model))}
    for out, s in scales.items():
        p = by_output.get(out)
        if p is None:
            raise QuantizationError(f"{out!r} is not a LayerNorm output feeding weighted ops; cannot fold scales")
        s = np.asarray(s, dtype=np.float64)
        _own(model, inits, p, "gamma")
        _own(model, inits, p, "beta")
        gamma = G.to_array(inits[p.gamma])
        if s.shape != gamma.shape:
            raise QuantizationError(
                f"SmoothQuant scales for {out!r} have {s.size} values but the LayerNorm has {gamma.size} channels; "
                "recalibrate"
            )
        G.store(inits[p.gamma], gamma / s)
        if p.beta is not None:
            G.store(inits[p.beta], G.to_array(inits[p.beta]) / s)
        for w, ax in zip(p.weights, p.weight_in_axes):
            G.store(inits[w], G.to_array(inits[w]) * (s[:, None] if ax == 0 else s[None, :]))


def _own(model: Any, inits: dict[str, Any], pair: LayerNormPair, which: str) -> None:
    """Give ``pair``'s LayerNorm a private copy of its gamma or beta when other nodes read
    the same initializer (in place; the copy is named after the LayerNorm)."""
    name = getattr(pair, which)
    node_name = pair.gamma_node if which == "gamma" else pair.beta_node
    if name is None or not node_name or sum(i == name for n in model.graph.node for i in n.input) <= 1:
        return
    from onnx import numpy_helper

    copy = f"{name}.smoothquant.{pair.norm}"
    if copy not in inits:
        t = numpy_helper.from_array(G.to_array(inits[name]).copy(), copy)
        model.graph.initializer.append(t)
        inits[copy] = model.graph.initializer[-1]
    node = next(n for n in model.graph.node if n.name == node_name)
    for i, inp in enumerate(node.input):
        if inp == name:
            node.input[i] = copy
    setattr(pair, which, copy)


def inject_outliers(model: Any, channels: int = 4, factor: float = 50.0, seed: int = 0) -> dict[str, list[int]]:
    """Scale ``channels`` LayerNorm output channels of every pair up by ``factor`` and the
    matching weight channels down (same function, outlier activations). Returns the channels."""
    rng = np.random.default_rng(seed)
    inits = G.initializers(model)
    pairs = find_layernorm_pairs(model)
    chosen = {}
    scales = {}
    for p in pairs:
        dim = G.to_array(inits[p.gamma]).shape[0]
        idx = np.sort(rng.choice(dim, size=min(channels, dim), replace=False))
        s = np.ones(dim, dtype=np.float64)
        s[idx] = 1.0 / factor
        scales[p.output] = s
        chosen[p.output] = [int(i) for i in idx]
    apply_channel_scales(model, scales, pairs)
    return chosen
