"""Read back what an engine got: layer precisions and DLA placement (``IEngineInspector`` JSON).

The builder needs ``ProfilingVerbosity.DETAILED`` for layer I/O formats to be listed. Two
schemas are read:

* TensorRT 8.x / 10.x: top-level ``Layers`` and ``Bindings`` (a list of names); each layer
  tensor carries one ``Format/Datatype`` string ("Row major linear FP32", "Four wide channel
  vectorized row major Int8 format", "Half", ...: trex's examples, Polygraphy);
* TensorRT 11.x: ``Bindings`` became ``I/O Tensors`` (objects with ``DataType``), and the
  migration guide says the ``Format/DataType`` field was split: a tensor carries ``Format``
  and ``DataType`` (spelled ``Datatype`` by TensorRT 11's own analysis scripts).

A layer whose tensors carry none of these keys is counted as ``unreadable``: the precision
check then says so instead of passing vacuously or refusing a good engine.

Myelin "ForeignNode" layers (TensorRT's fused transformer regions) show only their boundary
tensors: they are counted as ``opaque``. DLA regions are ForeignNode layers fed through
``<tensor> to nvm`` copies (the DLA's memory), as trtexec's profiles show them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from edgevit.errors import BackendError

PRECISIONS = ("INT8", "FP8", "FP16", "BF16", "FP32", "INT32", "BOOL", "INT64")
_DTYPE_KEYS = ("Format/Datatype", "DataType", "Datatype")


def _format_precision(fmt: str) -> str:
    f = fmt.lower()
    for key, name in (
        ("int8", "INT8"),
        ("fp8", "FP8"),
        ("e4m3", "FP8"),
        ("bfloat16", "BF16"),  # before "float"
        ("bf16", "BF16"),
        ("fp16", "FP16"),
        ("half", "FP16"),
        ("fp32", "FP32"),
        ("float", "FP32"),
        ("int32", "INT32"),
        ("int64", "INT64"),
        ("bool", "BOOL"),
    ):
        if key in f:
            return name
    return "other"


def tensor_precision(tensor: dict[str, Any]) -> str | None:
    """A layer tensor's precision from either schema; None when it has no data-type key."""
    for key in _DTYPE_KEYS:
        value = tensor.get(key)
        if isinstance(value, str) and value:
            return _format_precision(value)
    return None


def layer_precision(layer: dict[str, Any]) -> str:
    """The lowest floating/integer precision among a layer's inputs and outputs
    (``unreadable`` when no tensor carries a data type in a schema we know)."""
    seen = []
    for io in list(layer.get("Inputs", [])) + list(layer.get("Outputs", [])):
        if isinstance(io, dict):
            p = tensor_precision(io)
            if p is not None:
                seen.append(p)
    for p in ("INT8", "FP8", "FP16", "BF16", "FP32"):
        if p in seen:
            return p
    return seen[0] if seen else "unreadable"


def _is_foreign(layer: dict[str, Any]) -> bool:
    return str(layer.get("LayerType", "")) == "Myelin" or str(layer.get("Name", "")).startswith("{ForeignNode")


def dla_regions(layers: list[Any]) -> int:
    """ForeignNode layers fed through ``<tensor> to nvm`` copies (into DLA memory): the DLA
    loadables of the engine. GPU Myelin regions are ForeignNodes too, but are not fed that way."""
    nvm_outputs: set[str] = set()
    regions = 0
    prev_nvm = False
    for layer in layers:
        if isinstance(layer, dict):
            name = str(layer.get("Name", ""))
            ins = {str(t.get("Name", "")) for t in layer.get("Inputs", []) if isinstance(t, dict)}
            if name.endswith(" to nvm"):
                nvm_outputs |= {str(t.get("Name", "")) for t in layer.get("Outputs", []) if isinstance(t, dict)}
            elif _is_foreign(layer) and (bool(ins & nvm_outputs) if ins else prev_nvm):
                regions += 1
        else:  # LAYER_NAMES_ONLY: a ForeignNode right after a copy into DLA memory
            name = str(layer)
            if name.startswith("{ForeignNode") and prev_nvm:
                regions += 1
        prev_nvm = name.endswith(" to nvm")
    return regions


def summarize(engine_info: str | dict[str, Any]) -> dict[str, Any]:
    """Count layers per precision from ``get_engine_information(LayerInformationFormat.JSON)``."""
    data = json.loads(engine_info) if isinstance(engine_info, str) else engine_info
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    counts: dict[str, int] = {}
    opaque = 0
    detailed = 0
    types: dict[str, int] = {}
    for layer in layers:
        if not isinstance(layer, dict):  # LAYER_NAMES_ONLY: plain strings
            counts["unknown"] = counts.get("unknown", 0) + 1
            continue
        detailed += 1
        ltype = str(layer.get("LayerType", ""))
        types[ltype] = types.get(ltype, 0) + 1
        if _is_foreign(layer):
            opaque += 1
        p = layer_precision(layer)
        counts[p] = counts.get(p, 0) + 1
    schema = "11.x (I/O Tensors)" if isinstance(data, dict) and "I/O Tensors" in data else "8.x/10.x (Bindings)"
    return {
        "layers": len(layers),
        "detailed": detailed,
        "opaque": opaque,
        "by_precision": counts,
        "by_type": types,
        "dla_regions": dla_regions(layers),
        "schema": schema,
        "io": _io_tensors(data),
    }


def _io_tensors(data: Any) -> list[dict[str, str]]:
    """Engine I/O from ``Bindings`` (names) or ``I/O Tensors`` (objects)."""
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("I/O Tensors"), list):
        return [
            {"name": str(t.get("Name", "")), "mode": str(t.get("IOMode", "")), "dtype": str(t.get("DataType", ""))}
            for t in data["I/O Tensors"]
            if isinstance(t, dict)
        ]
    return [{"name": str(n)} for n in data.get("Bindings", []) if isinstance(n, str)]


def check_precision(summary: dict[str, Any], precision: str, strongly_typed: bool) -> str:
    """Raise BackendError when the engine lacks the asked-for precision; return how it was verified.

    With weak typing (builder flags) TensorRT may silently fall back to FP32: when every
    layer is readable and none runs in the requested precision, the build fails. Fused Myelin
    regions hide their inner precisions; an engine whose requested precision could only be
    inside them is accepted and recorded as such (strongly typed: guaranteed by the graph;
    weakly typed: "unverified" in the manifest). Layers in a schema we cannot read are never
    taken as proof either way.
    """
    by = summary.get("by_precision", {})
    wanted = {"int8": ["INT8"], "best": ["INT8"], "fp16": ["FP16"]}.get(precision, [])
    if not wanted:
        return "not needed (fp32)"
    if summary.get("detailed", 0) == 0:
        raise BackendError("the engine inspector returned no layer details; build with ProfilingVerbosity.DETAILED")
    have = sum(by.get(p, 0) for p in wanted)
    if have:
        return f"inspector: {have} {'/'.join(wanted)} layer(s)"
    unreadable = by.get("unreadable", 0)
    if unreadable:
        how = "strongly typed graph" if strongly_typed else "unverified"
        return (
            f"{how}: {unreadable} of {summary['detailed']} layer(s) list no data type in a known inspector schema "
            f"({summary.get('schema', '?')})"
        )
    if summary.get("opaque", 0):
        how = "strongly typed graph" if strongly_typed else "unverified"
        return f"{how}: {summary['opaque']} fused Myelin region(s) hide their inner precisions"
    raise BackendError(
        f"TensorRT built the engine without any {'/'.join(wanted)} layer although --precision {precision} was asked "
        f"(layers by precision: {by}); the engine was not written. "
        "Check the Q/DQ model and the device's INT8/FP16 support"
    )


# What the builder logs about DLA placement, in the forms seen from TensorRT 7 to 10:
#   "--------------- Layers running on DLA:" then "{a,b}, {c},"            (7.x, one INFO line)
#   "---------- Layers Running on DLA ----------" then "[DlaLayer] {ForeignNode[a...b]}" per
#   subgraph and "[GpuLayer] SOFTMAX: name" per GPU layer                (8.4+; VERBOSE in later 10.x)
LOG_MARKERS = ("[DlaLayer]", "[GpuLayer]", "Layers running on", "Layers Running on")
_DLA_HEADER = re.compile(r"-+\s*Layers running on DLA", re.I)
_GPU_HEADER = re.compile(r"-+\s*Layers running on GPU", re.I)


def dla_from_log(messages: list[str]) -> dict[str, int] | None:
    """DLA subgraphs and GPU layers from the builder's log; None when it said nothing about DLA."""
    dla = sum(1 for m in messages if "[DlaLayer]" in m)
    gpu = sum(1 for m in messages if "[GpuLayer]" in m)
    if dla or gpu:
        return {"dla_subgraphs": dla, "gpu_layers": gpu}
    if not any(_DLA_HEADER.search(m) or _GPU_HEADER.search(m) for m in messages):
        return None
    section = ""
    for msg in messages:  # the 7.x form: a header, then one line listing {subgraphs} or layers
        if _DLA_HEADER.search(msg):
            section = "dla"
        elif _GPU_HEADER.search(msg):
            section = "gpu"
        elif section == "dla":
            dla += len(re.findall(r"\{[^}]*\}", msg))
            section = ""
        elif section == "gpu":
            gpu += len([p for p in msg.split(",") if p.strip()])
            section = ""
    return {"dla_subgraphs": dla, "gpu_layers": gpu}
