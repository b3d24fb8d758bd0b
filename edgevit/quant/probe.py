"""Simulated INT8: the FP32 model with switchable fake quantizers, for every search the
quantizer makes (``--method auto``, the sensitivity scan, the accuracy budget).

:class:`FakeQuantProbe` rewrites the FP32 ONNX model once: every input of a quantizable
MatMul/Gemm/Conv gets a switchable fake quantizer. An activation ``x`` becomes
``x + m * (DQ(Q(x, scale)) - x)`` with ``scale`` a graph input per tensor and ``m`` a graph
input per layer; a weight ``W`` becomes ``W + m * (W_q - W)`` with ``W_q`` its symmetric
per-output-channel INT8 round trip. One ONNX Runtime session then evaluates any choice of
ranges and any set of layers left in floating point (``m = 0`` is exactly FP32), with
no re-quantization and no re-export. It simulates what the Q/DQ model computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from edgevit.errors import QuantizationError
from edgevit.quant.graph import WEIGHTED_OPS, weight_axis, weight_fake_quant


def quantized_inputs(
    model: Any, op_types: Sequence[str] = WEIGHTED_OPS, exclude: Sequence[str] = ()
) -> dict[str, list[tuple[int, str]]]:
    """Node name -> its (input index, tensor) pairs that get Q/DQ: input 0, and input 1
    (a weight, or the second activation of an attention batch matmul); nodes in ``exclude``
    (kept in floating point by the policy) have none."""
    out: dict[str, list[tuple[int, str]]] = {}
    skip = set(exclude)
    for i, n in enumerate(model.graph.node):
        if n.op_type in op_types and n.name not in skip:
            name = n.name or f"{n.op_type}_{i}"
            out[name] = [(idx, n.input[idx]) for idx in (0, 1) if idx < len(n.input) and n.input[idx]]
    return out


class FakeQuantProbe:
    """An ONNX Runtime session of the FP32 model with switchable fake quantization.

    Args:
        model: FP32 ``onnx.ModelProto`` (after any smoothing/bias correction).
        op_types: quantized op types.
        threads: ONNX Runtime intra-op threads.
        exclude: nodes the policy keeps in floating point (no fake quantizer at all).
    """

    def __init__(
        self,
        model: Any,
        op_types: Sequence[str] = WEIGHTED_OPS,
        threads: int | None = None,
        exclude: Sequence[str] = (),
    ):
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        m = onnx.ModelProto()
        m.CopyFrom(model)
        g = m.graph
        inits = {t.name: t for t in g.initializer}
        self.layers = quantized_inputs(m, op_types, exclude)
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
                    dw = weight_fake_quant(w, weight_axis(node, w.ndim)) - w
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
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
