"""``--method auto``: per activation tensor, the candidate bound that least disturbs the output
of the layer that reads it.

For a tensor ``x`` entering a weighted op, rounding it to INT8 with bound ``c`` changes that
op's output by ``(fq_c(x) - x) @ W`` (``W`` the layer's own INT8 weight), or by
``(fq_c(a) - a) @ b`` / ``a @ (fq_c(b) - b)`` for an attention batch matmul. The bound with the
smallest summed squared change over a few calibration images wins. This is the error the
network actually sees at that layer (a clipped channel that the weights ignore costs nothing;
a rounding error on a channel with large weights costs a lot), and it needs one forward pass
plus a few matrix products per candidate: seconds for a DeiT-Tiny-sized model on a CPU, where
searching each bound by its effect on the model's output took hundreds of passes.

Tensors read by a Conv (the patch embedding: the network input, whose range is known) keep
the method's bound. No torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from edgevit.quant import graph as G


def fake_quant(x: np.ndarray, amax: float) -> np.ndarray:
    """Symmetric INT8 round trip with bound ``amax`` (scale ``amax / 127``, saturating at the
    INT8 range, rounding half to even), as QuantizeLinear -> DequantizeLinear compute it."""
    scale = np.float32(amax) / np.float32(127.0) if amax > 0 else np.float32(1.0 / 127.0)
    return (np.clip(np.rint(x / scale), -128.0, 127.0) * scale).astype(np.float32)


def _readers(model: Any, op_types: Iterable[str]) -> dict[str, list[tuple[Any, int]]]:
    """Activation tensor -> the (MatMul/Gemm node, input index) that read it and get Q/DQ."""
    inits = G.initializers(model)
    out: dict[str, list[tuple[Any, int]]] = {}
    for n in model.graph.node:
        if n.op_type not in op_types or n.op_type == "Conv":
            continue
        for idx in (0, 1):
            if idx < len(n.input) and n.input[idx] and n.input[idx] not in inits:
                if idx == 1 and n.op_type != "MatMul":
                    continue
                out.setdefault(n.input[idx], []).append((n, idx))
    return out


def _weight(model: Any, node: Any, inits: dict[str, Any]) -> np.ndarray | None:
    """The layer's INT8 weight (its per-channel round trip) as ``[K, N]``, or None."""
    lw = G.linear_weight(model, node, inits)
    if lw is None:
        return None
    name, axis, transposed = lw
    w = G.weight_fake_quant(G.to_array(inits[name]), axis)
    return np.ascontiguousarray(w.T if transposed else w)


def layer_errors(
    model: Any,
    batches: Iterable[np.ndarray],
    candidates: dict[str, dict[str, float]],
    op_types: Iterable[str] = G.WEIGHTED_OPS,
    threads: int | None = None,
    progress: Callable[[Iterator[Any]], Iterator[Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """Tensor -> {method: summed squared change of its readers' outputs} for every tensor of
    ``candidates`` that a MatMul/Gemm reads. ``batches``: preprocessed NCHW inputs."""
    import onnx
    import onnxruntime as ort

    readers = {t: r for t, r in _readers(model, op_types).items() if t in candidates}
    if not readers:
        return {}
    inits = G.initializers(model)
    weights: dict[str, np.ndarray | None] = {}
    for rs in readers.values():
        for node, idx in rs:
            if idx == 0 and node.name not in weights:
                weights[node.name] = _weight(model, node, inits)
    wanted = set(readers)
    for rs in readers.values():  # the other input of an attention matmul
        for node, _ in rs:
            if node.input[1] not in inits:
                wanted.update(node.input[:2])
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    input_name = aug.graph.input[0].name
    have = {o.name for o in aug.graph.output}
    for t in sorted(wanted - have - {input_name}):
        aug.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(aug.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    errors: dict[str, dict[str, float]] = {t: dict.fromkeys(candidates[t], 0.0) for t in readers}
    it: Iterator[np.ndarray] = iter(batches)
    if progress is not None:
        it = progress(it)
    for x in it:
        values = dict(zip(names, sess.run(names, {input_name: x})))
        values[input_name] = x
        for t, rs in readers.items():
            v = values[t].astype(np.float32, copy=False)
            tried: dict[float, float] = {}
            for method, bound in candidates[t].items():
                key = round(float(bound), 9)
                if key not in tried:
                    d = fake_quant(v, bound) - v
                    tried[key] = sum(_change(d, node, idx, weights.get(node.name), values) for node, idx in rs)
                errors[t][method] += tried[key]
    return errors


def _change(d: np.ndarray, node: Any, idx: int, weight: np.ndarray | None, values: dict[str, np.ndarray]) -> float:
    """Squared change of ``node``'s output when its input ``idx`` moves by ``d``."""
    if weight is not None and idx == 0:  # a Linear: [..., K] @ [K, N]
        y = d.reshape(-1, d.shape[-1]) @ weight
    elif idx == 0:  # attention: (a + d) @ b - a @ b
        y = np.matmul(d, values[node.input[1]])
    else:
        y = np.matmul(values[node.input[0]], d)
    y = y.reshape(-1).astype(np.float64)
    return float(y @ y)


def choose(errors: dict[str, dict[str, float]], prefer: str) -> dict[str, str]:
    """Tensor -> the method with the smallest error (``prefer`` on ties)."""
    out = {}
    for t, errs in errors.items():
        best = min(errs.values())
        out[t] = prefer if errs.get(prefer, np.inf) <= best * (1 + 1e-9) else min(errs, key=errs.__getitem__)
    return out
