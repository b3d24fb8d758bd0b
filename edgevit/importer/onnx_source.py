"""A foreign ONNX image classifier made into an edgevit graph: one float NCHW input named
``images`` with a dynamic batch, one ``logits`` output, shape subgraphs folded by onnxslim
where the batch does not reach them, and every change proved on ONNX Runtime against the
original graph.

Why simplify: the exporters of timm and Hugging Face compute reshape sizes at run time
(``Shape -> Gather -> Concat -> Reshape``), and a LayerNorm output that also feeds a
``Shape`` is the tensor a quantizer would give one shared Q/DQ pair. onnxslim (a kept,
pure-Python tool) folds what does not depend on the batch and leaves the batch dynamic;
edgevit writes no graph rewrites of its own here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevit.errors import ArtifactError, first_line

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
MIN_OPSET = 13  # per-channel Q/DQ (axis) needs 13; TensorRT's parser reads 13+


@dataclass
class OnnxFacts:
    """What a foreign classifier's graph says about itself."""

    input_name: str
    output_name: str
    channels: int
    size: int | None  # H == W when static, else None
    batch: int | None  # a fixed batch, or None when dynamic
    num_classes: int | None
    opset: int


def _dims(value_info: Any) -> list[Any]:
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def inspect_graph(model: Any, where: str) -> OnnxFacts:
    """Refuse what is not a one-input, one-output image classifier, in one line naming what
    was found and what is supported."""
    from onnx import TensorProto

    from edgevit.quant.graph import opset

    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    found = ", ".join(f"{i.name} {_dims(i)}" for i in inputs) or "none"
    if len(inputs) != 1:
        raise ArtifactError(
            f"{where} has {len(inputs)} inputs ({found}); edgevit imports image classifiers with one float NCHW image input"
        )
    inp = inputs[0]
    elem = inp.type.tensor_type.elem_type
    dims = _dims(inp)
    if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16) or len(dims) != 4 or dims[1] not in (1, 3):
        raise ArtifactError(
            f"{where} takes {found} ({TensorProto.DataType.Name(elem)}); edgevit imports image classifiers "
            "with one float N x C x H x W input, C 1 or 3"
        )
    outs = [f"{o.name} {_dims(o)}" for o in graph.output]
    if len(graph.output) != 1 or len(_dims(graph.output[0])) != 2:
        raise ArtifactError(
            f"{where} has outputs {', '.join(outs)}; edgevit imports classifiers with one N x classes logits "
            "output (not detectors or feature extractors)"
        )
    custom = sorted({n.domain for n in graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ArtifactError(f"{where} uses custom operator domains {custom}; edgevit imports standard ONNX graphs")
    version = opset(model)
    if version < MIN_OPSET:
        raise ArtifactError(
            f"{where} is opset {version}; edgevit imports opset {MIN_OPSET} and newer (re-export with opset_version=17)"
        )
    h, w = dims[2], dims[3]
    size = h if isinstance(h, int) and h and h == w else None
    if isinstance(h, int) and isinstance(w, int) and h and w and h != w:
        raise ArtifactError(f"{where} takes {h} x {w} images; edgevit models take square inputs")
    out_dims = _dims(graph.output[0])
    return OnnxFacts(
        input_name=inp.name,
        output_name=graph.output[0].name,
        channels=int(dims[1]),
        size=size,
        batch=dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None,
        num_classes=out_dims[1] if isinstance(out_dims[1], int) and out_dims[1] > 0 else None,
        opset=version,
    )


def _rename(model: Any, old: str, new: str) -> None:
    if old == new:
        return
    graph = model.graph
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new
        for i, name in enumerate(n.output):
            if name == old:
                n.output[i] = new
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        if v.name == old:
            v.name = new


def normalize_io(model: Any, facts: OnnxFacts, size: int) -> None:
    """Input ``images`` (N x C x size x size, N dynamic), output ``logits`` (N x classes):
    renames and shape annotations only."""
    graph = model.graph
    _rename(model, facts.input_name, INPUT_NAME)
    _rename(model, facts.output_name, OUTPUT_NAME)
    inits = {t.name for t in graph.initializer}
    # drop initializers listed as graph inputs (old exporters): they are not inputs of ours
    keep = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_param = "batch"
    dims[2].Clear()
    dims[2].dim_value = size
    dims[3].Clear()
    dims[3].dim_value = size
    out = graph.output[0].type.tensor_type.shape.dim
    out[0].Clear()
    out[0].dim_param = "batch"
    del graph.value_info[:]  # stale shapes (e.g. a fixed batch) would mislead shape inference


def simplify(model: Any) -> tuple[Any, str]:
    """onnxslim's constant folding and shape-subgraph elimination (batch kept dynamic), or
    the model as it was when onnxslim is not installed. Returns the model and what was done."""
    try:
        import onnxslim
    except ImportError:
        return model, "not simplified: onnxslim is not installed (pip install onnxslim)"
    before = len(model.graph.node)
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # onnxslim raises its own and onnx's errors
        return model, f"not simplified: onnxslim failed ({first_line(exc)[:120]})"
    if slim is None:
        return model, "not simplified: onnxslim returned nothing"
    return slim, f"onnxslim {getattr(onnxslim, '__version__', '?')}: {before} -> {len(slim.graph.node)} nodes"


def session(model: Any) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise ArtifactError(f"ONNX Runtime cannot load the graph ({first_line(exc)[:200]})") from exc


def run(sess: Any, x: np.ndarray) -> np.ndarray:
    inp = sess.get_inputs()[0]
    if inp.type == "tensor(float16)":
        x = x.astype(np.float16)
    try:
        return np.asarray(sess.run(None, {inp.name: x})[0], dtype=np.float32)
    except Exception as exc:
        raise ArtifactError(f"ONNX Runtime failed on a batch of {len(x)} ({first_line(exc)[:200]})") from exc


def compare(reference: Any, candidate: Any, x: np.ndarray, fixed_batch: int | None) -> float:
    """Largest absolute logit difference of ``candidate`` (any batch) against ``reference``
    (run at its fixed batch, image by image when it has one) on ``x``."""
    if fixed_batch is not None:
        if fixed_batch != 1:
            raise ArtifactError(
                f"the graph has a fixed batch of {fixed_batch}; edgevit imports a dynamic batch or a batch of 1 "
                "(re-export with dynamic_axes for the batch)"
            )
        ref = np.concatenate([run(reference, x[i : i + 1]) for i in range(len(x))])
    else:
        ref = run(reference, x)
    got = run(candidate, x)
    if got.shape != ref.shape:
        raise ArtifactError(f"the imported graph returns {got.shape} where the original returns {ref.shape}")
    return float(np.abs(got - ref).max())
