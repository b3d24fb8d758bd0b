"""Read back what precision each engine layer got (``IEngineInspector``, JSON format).

The builder needs ``ProfilingVerbosity.DETAILED`` for layer I/O formats to be listed.
Myelin "ForeignNode" layers (TensorRT's fused transformer regions) show only their
boundary tensors: they are counted as ``opaque``.
"""

from __future__ import annotations

import json
from typing import Any

from edgevit.errors import BackendError

PRECISIONS = ("INT8", "FP8", "FP16", "BF16", "FP32", "INT32", "BOOL", "INT64")


def _format_precision(fmt: str) -> str:
    f = fmt.lower()
    for key, name in (
        ("int8", "INT8"),
        ("fp8", "FP8"),
        ("fp16", "FP16"),
        ("half", "FP16"),
        ("bf16", "BF16"),
        ("fp32", "FP32"),
        ("float", "FP32"),
        ("int32", "INT32"),
        ("int64", "INT64"),
        ("bool", "BOOL"),
    ):
        if key in f:
            return name
    return "other"


def layer_precision(layer: dict[str, Any]) -> str:
    """The lowest floating/integer precision among a layer's inputs and outputs."""
    seen = []
    for io in list(layer.get("Inputs", [])) + list(layer.get("Outputs", [])):
        if isinstance(io, dict):
            seen.append(_format_precision(str(io.get("Format/Datatype", ""))))
    for p in ("INT8", "FP8", "FP16", "BF16", "FP32"):
        if p in seen:
            return p
    return seen[0] if seen else "unknown"


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
        if ltype == "Myelin" or str(layer.get("Name", "")).startswith("{ForeignNode"):
            opaque += 1
        p = layer_precision(layer)
        counts[p] = counts.get(p, 0) + 1
    return {"layers": len(layers), "detailed": detailed, "opaque": opaque, "by_precision": counts, "by_type": types}


def check_precision(summary: dict[str, Any], precision: str, strongly_typed: bool) -> str:
    """Raise BackendError when the engine lacks the asked-for precision; return how it was verified.

    With weak typing (builder flags) TensorRT may silently fall back to FP32: when every
    layer is visible and none runs in the requested precision, the build fails. Fused Myelin
    regions hide their inner precisions; an engine whose requested precision could only be
    inside them is accepted and recorded as such (strongly typed: guaranteed by the graph;
    weakly typed: "unverified" in the manifest).
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
    if summary.get("opaque", 0):
        how = "strongly typed graph" if strongly_typed else "unverified"
        return f"{how}: {summary['opaque']} fused Myelin region(s) hide their inner precisions"
    raise BackendError(
        f"TensorRT built the engine without any {'/'.join(wanted)} layer although --precision {precision} was asked "
        f"(layers by precision: {by}); the plan was not written. "
        "Check the Q/DQ model and the device's INT8/FP16 support"
    )
