"""Rewrites of ONNX Runtime's own optimized INT8 graph that ONNX Runtime does not make
itself, applied in memory when an INT8 Q/DQ model is loaded on the CPU.

ONNX Runtime turns our ``DQ -> MatMul`` pairs into ``MatMulIntegerToFloat`` (an integer
GEMM that writes float), but then:

1. leaves each linear layer's bias as a separate ``Add``: one more pass over the
   activations per layer. ``MatMulIntegerToFloat`` has a bias input: the bias goes there.
   (Its ``BiasGeluFusion`` would fuse the MLP's bias into a ``BiasGelu``, which ran slower
   than the plain ``Gelu`` kernel; that fusion is switched off with ``disabled_optimizers``,
   so the MLP's bias folds into its GEMM like every other.)
2. runs the patch embedding (a ``Conv`` whose kernel equals its stride) in FP32 on
   dequantized inputs. It is a matrix product over non-overlapping patches:
   ``Reshape -> Transpose -> Reshape`` of the already quantized uint8 image (one byte per
   pixel), then ``MatMulIntegerToFloat``.

Rewrite 1 gives bit-identical outputs; rewrite 2 changes the order of the float sums in the
patch embedding. Both depend on ONNX Runtime internals (the optimized graph's op types and
``MatMulIntegerToFloat``'s input order), so:

* they run only with the ONNX Runtime versions CI tests (:data:`TESTED_VERSIONS`); with any
  other the graph is left alone and the runner's description says why;
* the rewritten graph is checked against the untouched one on a batch that spans the
  input's whole quantized range before it is used; a rewrite that changes the outputs is
  dropped and named. (This caught rewrite 2 on CPUs without VNNI: ONNX Runtime's u8s8 GEMM
  there multiplies with ``VPMADDUBSW``, whose 16-bit sums saturate on the full-range image
  bytes of the patch embedding.)

The rewritten graph uses ONNX Runtime contrib ops, so it exists only in memory, for the
ONNX Runtime that wrote it; the artifact on disk stays the portable Q/DQ file that TensorRT
and OpenVINO load.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MS = "com.microsoft"
# onnxruntime minor versions whose optimized graph these rewrites were tested on (CI).
TESTED_VERSIONS = ("1.32",)
# ONNX Runtime fusions that would hide what rewrite 1 folds (see the module docstring).
DISABLED_OPTIMIZERS = ("BiasGeluFusion",)
# Largest relative L2 difference of the outputs a rewrite may cause (rewrite 2 reorders
# float sums, so one value in a few thousand may land one quantizer step away).
TOLERANCE = 2e-3


@dataclass
class Rewrites:
    """What :func:`rewrite_for_cpu` changed, and what it refused to change."""

    bias_folds: int = 0
    patch_convs: int = 0
    skipped: str = ""  # why nothing was tried
    dropped: list[str] = field(default_factory=list)  # rewrites that changed the outputs

    @property
    def changed(self) -> bool:
        return bool(self.bias_folds or self.patch_convs)

    def __str__(self) -> str:
        if self.skipped:
            return f"CPU rewrites skipped: {self.skipped}"
        dropped = f"; dropped (outputs changed): {', '.join(self.dropped)}" if self.dropped else ""
        if not self.changed:
            return "no CPU rewrites apply" + dropped
        return (
            f"CPU rewrites: {self.bias_folds} biases into integer GEMMs, "
            f"{self.patch_convs} patch convolutions as integer GEMMs{dropped}"
        )


def version_skip_reason(version: str) -> str:
    """Why this onnxruntime version gets no rewrites ("" when it does)."""
    minor = ".".join(version.split(".")[:2])
    if minor in TESTED_VERSIONS:
        return ""
    return f"onnxruntime {version} is not a version they were tested with ({', '.join(TESTED_VERSIONS)})"


def session_options(level: Any = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = level if level is not None else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.log_severity_level = 3
    return opts


def ort_optimized(path: str | Path) -> Any:
    """ONNX Runtime's own optimized graph (level "extended", CPU) as an ONNX ``ModelProto``."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgevit-ort-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts = session_options()
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(
            str(path),
            sess_options=opts,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(DISABLED_OPTIMIZERS),
        )
        return onnx.load(str(out))


def rewrite_for_cpu(path: str | Path) -> tuple[bytes | None, Rewrites]:
    """The rewritten model's bytes (``None`` when nothing applies or it was all dropped)
    and what was done."""
    import onnxruntime as ort

    reason = version_skip_reason(ort.__version__)
    if reason:
        return None, Rewrites(skipped=reason)
    base = ort_optimized(path)
    if not any(n.op_type == "MatMulIntegerToFloat" for n in base.graph.node):
        return None, Rewrites()
    feed = _full_range_batch(base)
    reference = _run(base.SerializeToString(), feed)
    dropped: list[str] = []
    for patch in (True, False):
        proto = type(base)()
        proto.CopyFrom(base)
        done = rewrite(proto, patch_convs=patch)
        if not done.changed:
            return None, Rewrites(dropped=dropped)
        data = proto.SerializeToString()
        if _close(_run(data, feed), reference):
            done.dropped = dropped
            return data, done
        dropped.append("patch embedding as integer GEMM" if patch else "bias folds")
    return None, Rewrites(dropped=dropped)


def rewrite(proto: Any, patch_convs: bool = True) -> Rewrites:
    """Apply the rewrites to an ONNX Runtime optimized graph, in place."""
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in g.node:
        for name in node.input:
            consumers[name].append(node)
    producer = {o: node for node in g.node for o in node.output}
    done = Rewrites()
    _fold_biases(g, inits, consumers, done)
    if patch_convs:
        _patch_convs(g, inits, producer, done)
    if done.changed:
        _prune(g)
    return done


def _full_range_batch(proto: Any, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A random input spanning the whole range its quantizer covers (``[-128, 127] * scale``):
    the extreme bytes are where integer kernels saturate."""
    from onnx import numpy_helper

    inp = proto.graph.input[0]
    dims = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch for d in inp.type.tensor_type.shape.dim
    ]
    inits = {i.name: i for i in proto.graph.initializer}
    scale = 1.0
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] == inp.name and n.input[1] in inits:
            scale = float(np.max(numpy_helper.to_array(inits[n.input[1]])))
            break
    rng = np.random.default_rng(seed)
    x = rng.uniform(-130.0 * scale, 130.0 * scale, size=dims).astype(np.float32)
    return {inp.name: x}


def _run(model: bytes, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = session_options(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        model, sess_options=opts, providers=["CPUExecutionProvider"], disabled_optimizers=list(DISABLED_OPTIMIZERS)
    )
    return sess.run(None, feed)


def _close(got: list[np.ndarray], want: list[np.ndarray]) -> bool:
    for a, b in zip(got, want):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if not np.isfinite(a64).all() or np.linalg.norm(a64 - b64) > TOLERANCE * max(np.linalg.norm(b64), 1e-12):
            return False
    return True


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


def _fold_biases(g: Any, inits: dict[str, Any], consumers: dict[str, list[Any]], done: Rewrites) -> None:
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
        if user.op_type != "Add" or user.domain not in ("", "ai.onnx"):
            continue
        bias = user.input[1] if user.input[0] == out else user.input[0]
        if bias == out or not _const_vector(inits, bias, n_out):
            continue
        inputs = list(mm.input) + [""] * (6 - len(mm.input))
        del mm.input[:]
        mm.input.extend([*inputs, bias])
        mm.output[0] = user.output[0]
        g.node.remove(user)
        done.bias_folds += 1


def _patch_convs(g: Any, inits: dict[str, Any], producer: dict[str, Any], done: Rewrites) -> None:
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
        done.patch_convs += 1
