"""Ratios between bench targets, computed only from one report's own results."""

from __future__ import annotations

from typing import Any

# Reference targets every other target is divided by, when present in the same group.
# ``ort-fp32`` runs on edgevit's runner like our INT8 (same threading), so its ratio is the
# gain of INT8 alone; ``ort-fp32-plain`` is a plain ONNX Runtime session, what users run;
# ``ov-fp32-plain`` and ``ov-int8-nncf`` are what a user who picks OpenVINO runs (its FP32 with
# default hints, BF16 on AMX; NNCF's INT8).
REFERENCES = ("ort-fp32", "ort-fp32-plain", "torch-fp32", "ort-int8-ortdefault", "ov-fp32-plain", "ov-int8-nncf")


def throughputs(report: dict[str, Any]) -> dict[tuple[str, str, int], float]:
    """images/s by (group, kind, batch size)."""
    return {(r["group"], r["kind"], int(r["batch"])): float(r["throughput"]) for r in report["results"]}


def compute_ratios(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Throughput of every target over each reference target of its group, per batch size."""
    thr = throughputs(report)
    out = []
    for (group, kind, batch), value in thr.items():
        for ref in REFERENCES:
            den = thr.get((group, ref, batch))
            if den is None or ref == kind:
                continue
            out.append(
                {
                    "group": group,
                    "batch": batch,
                    "numerator": kind,
                    "denominator": ref,
                    "numerator_throughput": value,
                    "denominator_throughput": den,
                    "ratio": round(value / den, 3),
                }
            )
    return out
