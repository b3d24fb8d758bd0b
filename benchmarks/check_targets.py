"""Check an ``edgevit bench`` report against the acceptance targets in ``targets.json``.

    python benchmarks/check_targets.py benchmarks/bench.json            # one line per target
    python benchmarks/check_targets.py benchmarks/bench.json --markdown # the table for README.md

Every value is computed from the report's own numbers (throughputs, file sizes, preprocessing
rates); a target whose targets are not in the report is "not measured". Exit code 1 when a
measured target is missed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TARGETS = Path(__file__).resolve().with_name("targets.json")


def _throughputs(report: dict[str, Any]) -> dict[tuple[str, str, int], float]:
    return {(r["group"], r["kind"], int(r["batch"])): float(r["throughput"]) for r in report["results"]}


def _claim(group: Any, batch: Any, claim: str, num: str, den: Any, value: Any, threshold: float, met: Any) -> dict:
    return {
        "group": group,
        "batch": batch,
        "claim": claim,
        "numerator": num,
        "denominator": den,
        "value": value,
        "threshold": threshold,
        "met": met,
    }


def evaluate(report: dict[str, Any], targets: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target, checked against this report's numbers (``met`` is None when not measured)."""
    thr = _throughputs(report)
    speed = targets["speed"]
    overhead_max = targets["predict_overhead_max"]
    size_max = targets["int8_file_ratio_max"]
    claims: list[dict[str, Any]] = []
    for group in sorted({r["group"] for r in report["results"]}):
        batch = speed["batch"]
        for t in speed["ratios"] if group in speed["groups"] else ():
            a, b = thr.get((group, t["numerator"], batch)), thr.get((group, t["denominator"], batch))
            value = round(a / b, 3) if a is not None and b else None
            met = None if value is None else value >= t["min"]
            claims.append(
                _claim(
                    group, batch, f"{t['name']} >= {t['min']}x", t["numerator"], t["denominator"], value, t["min"], met
                )
            )
        for b in sorted({int(r["batch"]) for r in report["results"] if r["group"] == group}):
            full, bare = thr.get((group, "ort-int8", b)), thr.get((group, "ort-int8-session", b))
            if full is None or not bare:
                continue
            overhead = round(bare / full - 1.0, 4)
            claim = f"predict() overhead over a bare runner.infer <= {overhead_max:.0%}"
            claims.append(
                _claim(
                    group, b, claim, "ort-int8-session", "ort-int8", overhead, overhead_max, overhead <= overhead_max
                )
            )
        sizes = {t["kind"]: t["file_mb"] for t in report["targets"] if t["group"] == group}
        fp32_mb, int8_mb = sizes.get("ort-fp32"), sizes.get("ort-int8", sizes.get("ov-int8"))
        if fp32_mb and int8_mb:
            value = round(int8_mb / fp32_mb, 3)
            claim = f"INT8 file <= {size_max:.0%} of the FP32 file"
            claims.append(
                _claim(group, None, claim, "int8 file MB", "fp32 file MB", value, size_max, value <= size_max)
            )
    for t in targets["preprocess"]:
        size, channels, threshold = t["size"], t["channels"], float(t["min_images_per_s"])
        row = next(
            (p for p in report["preprocess"] if p["size"] == size and p["channels"] == channels and not p["resize"]),
            None,
        )
        value = row["images_per_s"] if row else None
        claim = f"preprocessing of {size}x{size}x{channels} uint8 frames >= {threshold:g} images/s"
        met = None if value is None else value >= threshold
        claims.append(_claim(None, row["batch"] if row else None, claim, "images/s", None, value, threshold, met))
    return claims


def format_text(claims: list[dict[str, Any]]) -> str:
    lines = []
    for c in claims:
        status = {True: "met", False: "MISSED", None: "not measured"}[c["met"]]
        where = f"{c['group']} " if c["group"] else ""
        where += f"b{c['batch']} " if c["batch"] else ""
        value = "-" if c["value"] is None else f"{c['value']:g}"
        lines.append(f"[{status}] {where}{c['claim']}: {value}")
    return "\n".join(lines)


def format_markdown(claims: list[dict[str, Any]]) -> str:
    lines = ["| target | value | met |", "|---|---:|---|"]
    for c in claims:
        where = " ".join(x for x in (c["group"], f"batch {c['batch']}" if c["batch"] else "") if x)
        value = "-" if c["value"] is None else f"{c['value']:g}"
        met = {True: "yes", False: "**no**", None: "not measured"}[c["met"]]
        lines.append(f"| {where + ': ' if where else ''}{c['claim']} | {value} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", type=Path, help="the JSON an `edgevit bench` run wrote")
    p.add_argument("--targets", type=Path, default=TARGETS, help="the targets (default: %(default)s)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    claims = evaluate(json.loads(args.report.read_text()), json.loads(args.targets.read_text()))
    print(format_markdown(claims) if args.markdown else format_text(claims))
    return 1 if any(c["met"] is False for c in claims) else 0


if __name__ == "__main__":
    sys.exit(main())
