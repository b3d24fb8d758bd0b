"""Simulated INT8 for search: per-tensor range search (``--method auto``), the per-layer
sensitivity scan and the mixed-precision fallback to an accuracy budget.

:class:`FakeQuantProbe` rewrites the FP32 ONNX model once: every input of a quantizable
MatMul/Gemm/Conv gets a switchable fake quantizer. An activation ``x`` becomes
``x + m * (DQ(Q(x, scale)) - x)`` with ``scale`` a graph input per tensor and ``m`` a graph
input per layer; a weight ``W`` becomes ``W + m * (W_q - W)`` with ``W_q`` its symmetric
per-output-channel INT8 round trip. One ONNX Runtime session then evaluates any choice of
ranges and any set of layers left in floating point (``m = 0`` is exactly FP32), with
no re-quantization and no re-export. It simulates what the Q/DQ model computes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgevit.errors import QuantizationError
from edgevit.qdq_rules import WEIGHTED_OPS
from edgevit.smoothquant import weight_fake_quant


def quantized_inputs(model: Any, op_types: Sequence[str] = WEIGHTED_OPS) -> dict[str, list[tuple[int, str]]]:
    """Node name -> its (input index, tensor) pairs that get Q/DQ: input 0, and input 1
    (a weight, or the second activation of an attention batch matmul)."""
    out: dict[str, list[tuple[int, str]]] = {}
    for i, n in enumerate(model.graph.node):
        if n.op_type in op_types:
            name = n.name or f"{n.op_type}_{i}"
            out[name] = [(idx, n.input[idx]) for idx in (0, 1) if idx < len(n.input) and n.input[idx]]
    return out


def _weight_axis(node: Any, ndim: int) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
    return ndim - 1


class FakeQuantProbe:
    """An ONNX Runtime session of the FP32 model with switchable fake quantization.

    Args:
        model: FP32 ``onnx.ModelProto`` (after any smoothing/bias correction).
        op_types: quantized op types.
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, model: Any, op_types: Sequence[str] = WEIGHTED_OPS, threads: int | None = None):
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        m = onnx.ModelProto()
        m.CopyFrom(model)
        g = m.graph
        inits = {t.name: t for t in g.initializer}
        self.layers = quantized_inputs(m, op_types)
        self.activations: list[str] = []
        for pairs in self.layers.values():
            for _, t in pairs:
                if t not in inits and t not in self.activations:
                    self.activations.append(t)
        g.initializer.append(numpy_helper.from_array(np.zeros((), np.int8), "__fq_zero"))
        new_nodes = []
        self.scale_inputs = {t: f"__fq_scale_{i}" for i, t in enumerate(self.activations)}
        self.mask_inputs = {name: f"__fq_mask_{i}" for i, name in enumerate(self.layers)}
        for s in self.scale_inputs.values():
            g.input.append(helper.make_tensor_value_info(s, TensorProto.FLOAT, []))
        for mk in self.mask_inputs.values():
            g.input.append(helper.make_tensor_value_info(mk, TensorProto.FLOAT, []))
        by_name = {(n.name or f"{n.op_type}_{i}"): n for i, n in enumerate(g.node)}
        for lname, pairs in self.layers.items():
            node = by_name[lname]
            mk = self.mask_inputs[lname]
            for idx, t in pairs:
                p = f"__fq_{len(new_nodes)}"
                if t in inits:
                    w = numpy_helper.to_array(inits[t]).astype(np.float32)
                    dw = weight_fake_quant(w, _weight_axis(node, w.ndim)) - w
                    g.initializer.append(numpy_helper.from_array(dw, p + "_dw"))
                    new_nodes += [
                        helper.make_node("Mul", [mk, p + "_dw"], [p + "_mdw"]),
                        helper.make_node("Add", [t, p + "_mdw"], [p + "_out"]),
                    ]
                else:
                    s = self.scale_inputs[t]
                    new_nodes += [
                        helper.make_node("QuantizeLinear", [t, s, "__fq_zero"], [p + "_q"]),
                        helper.make_node("DequantizeLinear", [p + "_q", s, "__fq_zero"], [p + "_dq"]),
                        helper.make_node("Sub", [p + "_dq", t], [p + "_d"]),
                        helper.make_node("Mul", [mk, p + "_d"], [p + "_md"]),
                        helper.make_node("Add", [t, p + "_md"], [p + "_out"]),
                    ]
                node.input[idx] = p + "_out"
        # insert the fake quantizers before their consumers: append, then sort topologically
        g.node.extend(new_nodes)
        _topological_sort(g)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # pragma: no cover - a graph ORT cannot load is our bug
            raise QuantizationError(f"cannot build the fake-quantization probe ({exc})") from exc
        self.input_name = model.graph.input[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.evaluations = 0

    def logits(
        self, x: np.ndarray, amax: dict[str, float], float_layers: Iterable[str] = (), batch_size: int = 64
    ) -> np.ndarray:
        """Logits of the simulated INT8 model with ``float_layers`` left in floating point;
        ``amax`` must give every activation tensor's clipping bound."""
        float_set = set(float_layers)
        feed: dict[str, np.ndarray] = {}
        for t, s in self.scale_inputs.items():
            a = np.float32(amax.get(t, 0.0))
            a = a if a > 0 else np.float32(1.0)
            # ONNX Runtime's arithmetic, to the bit: (amax - (-amax)) / (127 - (-127)) in float32
            feed[s] = np.array((a + a) / np.float32(254.0), dtype=np.float32)
        for name, mk in self.mask_inputs.items():
            feed[mk] = np.array(0.0 if name in float_set else 1.0, dtype=np.float32)
        self.evaluations += 1
        outs = []
        for i in range(0, len(x), batch_size):
            feed[self.input_name] = x[i : i + batch_size]
            outs.append(self.session.run([self.output_name], feed)[0])
        return np.concatenate(outs)

    def float_logits(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return self.logits(x, {}, self.layers, batch_size)


def _topological_sort(graph: Any) -> None:
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise QuantizationError("the graph has a cycle or a missing input; cannot insert fake quantizers")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def mean_kl(ref: np.ndarray, cand: np.ndarray) -> float:
    from edgevit.validate import compare_logits

    return compare_logits(ref, cand)["mean_kl"]


def auto_ranges(
    probe: FakeQuantProbe,
    x: np.ndarray,
    candidates: dict[str, dict[str, float]],
    start: str = "mse",
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Per activation tensor, the candidate bound minimizing KL at the model output.

    One greedy sweep in graph order: every tensor starts at the single method (``start``
    on ties) that is best for all tensors at once; each one in turn
    tries the other methods' bounds with all the others quantized, and keeps the best.
    Returns tensor -> amax and tensor -> chosen method.
    """
    ref = probe.float_logits(x)
    # start from the best single method for every tensor, so auto is never worse than it
    best, amax, chosen = float("inf"), {}, {}
    for method in dict.fromkeys([start, *next(iter(candidates.values()), {})]):
        trial = {t: candidates[t][method] for t in probe.activations}
        kl = mean_kl(ref, probe.logits(x, trial))
        if kl < best:
            best, amax, chosen = kl, trial, {t: method for t in probe.activations}
    tensors: Iterable[str] = probe.activations
    if progress is not None:
        tensors = progress(tensors)
    for t in tensors:
        tried = {round(amax[t], 6)}
        for method, value in candidates[t].items():
            if round(value, 6) in tried or value <= 0:
                continue
            tried.add(round(value, 6))
            trial = dict(amax)
            trial[t] = value
            kl = mean_kl(ref, probe.logits(x, trial))
            if kl < best - 1e-12:
                best, amax, chosen[t] = kl, trial, method
    return amax, chosen


@dataclass
class Score:
    top1: float  # percent
    drop: float  # points against FP32 on the same images
    agreement: float  # percent
    mean_kl: float


@dataclass
class SensitivityReport:
    """The scan and the fallback choice, as written into the calibration table."""

    images: int
    seed: int
    budget: float | None  # largest top-1 drop in points, on the held-out slice
    min_agreement: float | None
    fp32_top1: float
    int8: Score  # every layer quantized
    layers: dict[str, float]  # layer -> mean KL at the output with only that layer in INT8
    ranking: list[str]  # most damaging first
    float_layers: list[str]  # chosen fallback (FP16 on the device)
    result: Score  # with the fallback
    met: bool
    evaluations: int
    message: str = ""
    candidates_tried: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray) -> Score:
    from edgevit.validate import compare_logits

    c = compare_logits(ref, cand)
    ref_top1 = 100.0 * float((ref.argmax(1) == labels).mean())
    top1 = 100.0 * float((cand.argmax(1) == labels).mean())
    return Score(top1=top1, drop=ref_top1 - top1, agreement=c["agreement"], mean_kl=c["mean_kl"])


def scan_and_fallback(
    probe: FakeQuantProbe,
    x: np.ndarray,
    labels: np.ndarray,
    amax: dict[str, float],
    budget: float | None,
    min_agreement: float | None = None,
    seed: int = 0,
    max_exhaustive: int = 400,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> SensitivityReport:
    """Rank the layers by the damage each alone does, then leave the fewest in floating
    point that meet ``budget`` (top-1 drop, points) and ``min_agreement`` (percent).

    Search: add layers in ranking order until the budget holds (``k`` layers); then try
    every set of fewer layers, smallest first, while that costs at most ``max_exhaustive``
    evaluations; then drop any chosen layer the budget does not need.
    """
    start = probe.evaluations
    ref = probe.float_logits(x)
    fp32_top1 = 100.0 * float((ref.argmax(1) == labels).mean())
    int8 = _score(ref, probe.logits(x, amax), labels)
    names = list(probe.layers)
    damage = {}
    it: Iterable[str] = names
    if progress is not None:
        it = progress(names)
    for name in it:
        others = [n for n in names if n != name]
        damage[name] = mean_kl(ref, probe.logits(x, amax, others))
    ranking = sorted(names, key=lambda n: (-damage[n], names.index(n)))

    def meets(s: Score) -> bool:
        return (budget is None or s.drop <= budget + 1e-9) and (min_agreement is None or s.agreement >= min_agreement)

    cache: dict[frozenset[str], Score] = {}

    def evaluate(fp: Iterable[str]) -> Score:
        key = frozenset(fp)
        if key not in cache:
            cache[key] = _score(ref, probe.logits(x, amax, key), labels)
        return cache[key]

    if budget is None and min_agreement is None:
        chosen: list[str] = []
    else:
        chosen = []
        k_found = None
        for k in range(len(ranking) + 1):
            if meets(evaluate(ranking[:k])):
                k_found = k
                break
        if k_found is not None:
            chosen = ranking[:k_found]
            for j in range(1, k_found):
                combos = list(itertools.combinations(ranking, j))
                if len(combos) > max_exhaustive:
                    break
                hits = [c for c in combos if meets(evaluate(c))]
                if hits:
                    chosen = list(min(hits, key=lambda c: (evaluate(c).mean_kl, [ranking.index(n) for n in c])))
                    break
            for n in sorted(chosen, key=lambda n: damage[n]):
                smaller = [c for c in chosen if c != n]
                if len(smaller) < len(chosen) and meets(evaluate(smaller)):
                    chosen = smaller
    result = evaluate(chosen)
    met = meets(result)
    message = ""
    if not met:
        best = min(cache.items(), key=lambda kv: (kv[1].drop, -kv[1].agreement, len(kv[0])))
        chosen, result = sorted(best[0], key=ranking.index), best[1]
        message = (
            f"the budget (drop <= {budget} points"
            + (f", agreement >= {min_agreement}%" if min_agreement is not None else "")
            + f") cannot be met even with every layer in floating point; kept the best model found "
            f"({len(chosen)} layers in floating point, drop {result.drop:.2f} points, "
            f"agreement {result.agreement:.2f}%)"
        )
    tried = [
        {"float_layers": sorted(k, key=ranking.index), **asdict(v)}
        for k, v in sorted(cache.items(), key=lambda kv: len(kv[0]))
    ][:50]
    return SensitivityReport(
        images=len(x),
        seed=seed,
        budget=budget,
        min_agreement=min_agreement,
        fp32_top1=fp32_top1,
        int8=int8,
        layers={n: float(damage[n]) for n in ranking},
        ranking=ranking,
        float_layers=[n for n in ranking if n in set(chosen)],
        result=result,
        met=met,
        evaluations=probe.evaluations - start,
        message=message,
        candidates_tried=tried,
    )
