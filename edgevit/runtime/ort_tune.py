"""Three rewrites of ONNX Runtime's own optimized INT8 graph that ONNX Runtime (1.2x-1.3x)
does not make itself, applied in memory when an INT8 Q/DQ model is loaded on the CPU.

ONNX Runtime turns our ``DQ -> MatMul`` pairs into ``MatMulIntegerToFloat`` (an integer
GEMM, AMX or VNNI on x86, that writes float), but then:

1. leaves each linear layer's bias as a separate ``Add``: one more pass over the
   activations per layer. ``MatMulIntegerToFloat`` has a bias input: the bias goes there.
2. fuses the MLP's bias and GELU into ``BiasGelu``, which runs ~1.4x slower than the
   plain (exact, erf) ``Gelu`` kernel: the bias goes into the GEMM, ``Gelu`` stays.
3. runs the patch embedding (a ``Conv`` whose kernel equals its stride) in FP32 on
   dequantized inputs, near the FP32 peak but far from the INT8 one. It is a matrix
   product over non-overlapping patches: ``Reshape -> Transpose -> Reshape`` of the
   already quantized uint8 image (cheap: one byte per pixel), then ``MatMulIntegerToFloat``.

Rewrites 1 and 2 give bit-identical outputs. Rewrite 3 changes only the order of the
float sums in the patch embedding (differences ~1e-7 in its output). Everything else,
every Q/DQ scale included, is untouched: the model computes what the artifact says.
DeiT-Tiny at batch 8 on 2 cores: ~182 -> ~210 images/s (benchmarks/README.md).

The rewritten graph uses ONNX Runtime contrib ops, so it exists only in memory, for the
ONNX Runtime version that wrote it; the artifact on disk stays the portable Q/DQ file
that TensorRT and OpenVINO load.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MS = "com.microsoft"


@dataclass
class Tuning:
    """What :func:`tune_for_cpu` changed."""

    bias_folds: int = 0
    gelus: int = 0
    patch_convs: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.bias_folds or self.gelus or self.patch_convs)

    def __str__(self) -> str:
        if not self.changed:
            return "no CPU rewrites apply"
        return (
            f"CPU rewrites: {self.bias_folds} biases into integer GEMMs, {self.gelus} BiasGelu -> Gelu, "
            f"{self.patch_convs} patch convolutions as integer GEMMs"
        )


def ort_optimized(path: str | Path) -> Any:
    """ONNX Runtime's own optimized graph (level "extended", CPU) as an ONNX ``ModelProto``."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgevit-ort-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return onnx.load(str(out))


def tune_for_cpu(path: str | Path) -> tuple[bytes | None, Tuning]:
    """The rewritten model's bytes (``None`` when no rewrite applies) and what was done."""
    proto = ort_optimized(path)
    tuning = rewrite(proto)
    return (proto.SerializeToString() if tuning.changed else None), tuning


def rewrite(proto: Any) -> Tuning:
    """Apply the three rewrites to an ONNX Runtime optimized graph, in place."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in g.node:
        for name in node.input:
            consumers[name].append(node)
    producer = {o: node for node in g.node for o in node.output}
    tuning = Tuning()
    _fold_biases(g, inits, consumers, tuning)
    _patch_convs(g, inits, producer, tuning)
    if tuning.changed:
        _prune(g)
    return tuning


def _prune(g: Any) -> None:
    """Drop nodes nothing reads any more (the patch convolution's float dequantization),
    then initializers no node reads."""
    keep = {o.name for o in g.output}
    changed = True
    while changed:
        used = keep | {name for node in g.node for name in node.input}
        dead = [node for node in g.node if not any(o in used for o in node.output if o)]
        changed = bool(dead)
        for node in dead:
            g.node.remove(node)
    used = {name for node in g.node for name in node.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)


def _const_vector(inits: dict[str, Any], name: str, length: int) -> bool:
    t = inits.get(name)
    return t is not None and list(t.dims) == [length]


def _fold_biases(g: Any, inits: dict[str, Any], consumers: dict[str, list[Any]], tuning: Tuning) -> None:
    graph_outputs = {o.name for o in g.output}
    for mm in list(g.node):
        if mm.op_type != "MatMulIntegerToFloat" or mm.domain != MS or (len(mm.input) > 6 and mm.input[6]):
            continue
        weight = inits.get(mm.input[1])
        out = mm.output[0]
        users = consumers.get(out, [])
        if weight is None or len(users) != 1 or out in graph_outputs:
            continue
        user, n_out = users[0], int(weight.dims[-1])
        if user.op_type == "Add" and user.domain in ("", "ai.onnx"):
            bias = user.input[1] if user.input[0] == out else user.input[0]
        elif user.op_type == "BiasGelu" and user.domain == MS and user.input[0] == out:
            bias = user.input[1]
        else:
            continue
        if bias == out or not _const_vector(inits, bias, n_out):
            continue
        inputs = list(mm.input) + [""] * (6 - len(mm.input))
        del mm.input[:]
        mm.input.extend([*inputs, bias])
        if user.op_type == "Add":
            mm.output[0] = user.output[0]
            g.node.remove(user)
            tuning.bias_folds += 1
        else:
            user.op_type = "Gelu"  # com.microsoft Gelu: the same erf GELU, without the bias
            del user.input[1:]
            tuning.gelus += 1


def _patch_convs(g: Any, inits: dict[str, Any], producer: dict[str, Any], tuning: Tuning) -> None:
    from onnx import helper, numpy_helper

    if len(g.input) != 1:
        return
    image = g.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim]
    for conv in list(g.node):
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        if (
            len(kernel) != 2
            or list(attrs.get("strides", [])) != kernel
            or any(attrs.get("pads", [0, 0, 0, 0]))
            or attrs.get("group", 1) != 1
            or any(d != 1 for d in attrs.get("dilations", [1, 1]))
            or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
        ):
            continue
        dq_x, dq_w = producer.get(conv.input[0]), producer.get(conv.input[1])
        if dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear":
            continue
        quant = producer.get(dq_x.input[0])
        if quant is None or quant.op_type != "QuantizeLinear" or quant.input[0] != image.name:
            continue  # only the patch embedding, whose input shape the graph states
        if len(dq_x.input) < 3 or len(dq_w.input) < 3 or dq_w.input[0] not in inits:
            continue
        w = numpy_helper.to_array(inits[dq_w.input[0]])
        if w.ndim != 4 or len(dims) != 4 or dims[1] != w.shape[1] or None in dims[2:]:
            continue
        e, c, ph, pw = w.shape
        h, wd = dims[2], dims[3]
        if h % ph or wd % pw:
            continue
        hp, wp = h // ph, wd // pw
        name = conv.name or conv.output[0]
        w_t = numpy_helper.from_array(np.ascontiguousarray(w.reshape(e, c * ph * pw).T), f"{name}/weight_kxn")
        shapes = [
            numpy_helper.from_array(np.array(s, np.int64), f"{name}/shape{i}")
            for i, s in enumerate(([0, c, hp, ph, wp, pw], [0, hp * wp, c * ph * pw], [0, e, hp, wp]))
        ]
        g.initializer.extend([w_t, *shapes])
        bias = conv.input[2] if len(conv.input) > 2 else ""
        nodes = [
            # (B, C, H, W) uint8 -> (B, C, Hp, ph, Wp, pw) -> (B, Hp, Wp, C, ph, pw) -> (B, Hp*Wp, C*ph*pw)
            helper.make_node("Reshape", [dq_x.input[0], shapes[0].name], [f"{name}/split"]),
            helper.make_node("Transpose", [f"{name}/split"], [f"{name}/patches"], perm=[0, 2, 4, 1, 3, 5]),
            helper.make_node("Reshape", [f"{name}/patches", shapes[1].name], [f"{name}/rows"]),
            # (B, Hp*Wp, C*ph*pw) x (C*ph*pw, E) + bias -> (B, Hp*Wp, E), integer GEMM, float out
            helper.make_node(
                "MatMulIntegerToFloat",
                [f"{name}/rows", w_t.name, dq_x.input[1], dq_w.input[1], dq_x.input[2], dq_w.input[2], bias],
                [f"{name}/tokens"],
                domain=MS,
            ),
            # (B, Hp*Wp, E) -> (B, E, Hp*Wp) -> (B, E, Hp, Wp): the Conv's own output
            helper.make_node("Transpose", [f"{name}/tokens"], [f"{name}/channels"], perm=[0, 2, 1]),
            helper.make_node("Reshape", [f"{name}/channels", shapes[2].name], [conv.output[0]]),
        ]
        at = list(g.node).index(conv)
        g.node.remove(conv)
        for i, node in enumerate(nodes):
            g.node.insert(at + i, node)
        tuning.patch_convs += 1
