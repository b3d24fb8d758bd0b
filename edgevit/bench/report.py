"""The three outputs of a benchmark run: a terminal table, the JSON report and a PNG plot
(throughput by batch size, one line per backend and precision)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit.artifacts import write_bytes_atomic, write_json_atomic, write_text_atomic
from edgevit.errors import EdgeVitError


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return out


def format_report(report: dict[str, Any]) -> str:
    """The human-readable summary printed by ``edgevit bench``."""
    lines = [
        f"machine: {report['machine']['description']}",
        f"threads: {report['threads']}  load average at start {report['loadavg']['start']}, "
        f"end {report['loadavg']['end']}",
    ]
    lines += [f"note: {n}" for n in report["notes"]]
    ratio_to: dict[tuple[str, str, int], float] = {
        (r["group"], r["numerator"], r["batch"]): r["ratio"] for r in report["ratios"] if r["denominator"] == "ort-fp32"
    }
    labels = {t["id"]: t for t in report["targets"]}
    rows = []
    for r in sorted(report["results"], key=lambda r: (r["group"], r["batch"], -r["throughput"])):
        t = labels[r["target"]]
        lat = r["latency_ms"]
        rows.append(
            [
                f"{r['group']} b{r['batch']}",
                f"{t['label']} [{r['backend']}, {r['precision']}]",
                _fmt(r["throughput"]),
                _fmt(ratio_to.get((r["group"], r["kind"], r["batch"]), 1.0 if r["kind"] == "ort-fp32" else None), 2)
                + "x",
                _fmt(lat["p50"], 2),
                _fmt(lat["p90"], 2),
                _fmt(lat["p99"], 2),
                _fmt(r.get("mem_mb"), 1),
            ]
        )
    lines.append("")
    lines += _table(["model", "target", "img/s", "vs ORT FP32", "p50 ms", "p90 ms", "p99 ms", "mem MB"], rows)
    pre_rows = [
        [
            f"{p['size']}x{p['size']}x{p['channels']}",
            f"uint8 frames {p['frame'][0]}x{p['frame'][1]}{' (resize)' if p['resize'] else ''}, batch {p['batch']}",
            _fmt(p["images_per_s"]),
            _fmt(p["ms_per_batch_p50"], 3),
        ]
        for p in report["preprocess"]
    ]
    lines.append("")
    lines += _table(["preprocess", "input", "img/s", "p50 ms/batch"], pre_rows)
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Throughput by batch size, one line per target, one panel per model group."""
    import io

    try:
        import matplotlib
    except ImportError as exc:
        raise EdgeVitError(f"the plot needs matplotlib ({exc}); pip install matplotlib, or pass --no-plot") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["group"] for r in report["results"]})
    labels = {t["id"]: t for t in report["targets"]}
    n_lines = max(len({r["target"] for r in report["results"] if r["group"] == g}) for g in groups)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.4 * len(groups), 3.4 + 0.17 * n_lines), squeeze=False)
    colors = plt.get_cmap("tab20").colors  # more targets than the default cycle's 10 colours
    markers = "os^vDP"
    for ax, group in zip(axes[0], groups):
        rows = [r for r in report["results"] if r["group"] == group]
        for i, tid in enumerate(sorted({r["target"] for r in rows})):
            pts = sorted((r["batch"], r["throughput"]) for r in rows if r["target"] == tid)
            t = labels[tid]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=markers[i % len(markers)],
                color=colors[(2 * i) % len(colors) + (2 * i) // len(colors)],
                label=f"{t['label']} ({t['precision']})",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["batch"] for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_title(f"{group}, {report['threads']} threads", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    load = report["loadavg"]["start"][0]
    fig.suptitle(f"{report['machine']['cpu']}, load avg {load:.2f} at start", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)


def write_report(
    report: dict[str, Any], out_dir: str | Path, name: str = "bench", plot: bool = True
) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` (Markdown tables) and ``<name>.png`` under ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / f"{name}.json"}
    write_json_atomic(paths["json"], report)
    paths["md"] = out_dir / f"{name}.md"
    write_text_atomic(paths["md"], format_markdown(report))
    if plot:
        paths["png"] = plot_report(report, out_dir / f"{name}.png")
    return paths


def format_markdown(report: dict[str, Any]) -> str:
    """The run as Markdown tables (for ``benchmarks/README.md``), from the report alone."""
    labels = {t["id"]: t for t in report["targets"]}
    vs: dict[tuple[str, str, int, str], float] = {
        (q["group"], q["numerator"], q["batch"], q["denominator"]): q["ratio"] for q in report["ratios"]
    }
    load = report["loadavg"]
    lines = [
        f"Machine: {report['machine']['description']}; {report['threads']} threads for every backend; "
        + ", ".join(f"{k} {v}" for k, v in report["machine"]["versions"].items())
        + ".",
        f"Load average (1, 5, 15 min) at start {load['start']}, at the end {load['end']}; "
        f"run {report['created']}; {report['settings']['rounds']} interleaved rounds of "
        f"at least {report['settings']['min_time_s']} s per case.",
        "",
    ]
    lines += [f"* {n}" for n in report["notes"]]
    lines += [f"* {t['label']} ({t['group']}): {t['note']}" for t in report["targets"] if t.get("note")]
    for group in sorted({r["group"] for r in report["results"]}):
        lines += [
            "",
            f"### {group}",
            "",
            "| batch | target | backend, precision | img/s | vs ORT FP32 | vs PyTorch | p50 ms | p90 ms | p99 ms | mem MB |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rows = sorted(
            (r for r in report["results"] if r["group"] == group), key=lambda r: (r["batch"], -r["throughput"])
        )
        for r in rows:
            lat = r["latency_ms"]
            a = vs.get((group, r["kind"], r["batch"], "ort-fp32"), 1.0 if r["kind"] == "ort-fp32" else None)
            b = vs.get((group, r["kind"], r["batch"], "torch-fp32"), 1.0 if r["kind"] == "torch-fp32" else None)
            lines.append(
                f"| {r['batch']} | {labels[r['target']]['label']} | {r['backend']}, {r['precision']} "
                f"| {_fmt(r['throughput'])} | {_fmt(a, 2)}x | {_fmt(b, 2)}x | {_fmt(lat['p50'], 2)} "
                f"| {_fmt(lat['p90'], 2)} | {_fmt(lat['p99'], 2)} | {_fmt(r.get('mem_mb'), 1)} |"
            )
    lines += ["", "### Preprocessing (uint8 frames -> float32 NCHW, timed apart from inference)", ""]
    lines += ["| model input | frames | batch | img/s | ms per batch (p50) |", "|---|---|---:|---:|---:|"]
    for p in report["preprocess"]:
        frame = f"{p['frame'][0]}x{p['frame'][1]}x{p['channels']}" + (" (resized)" if p["resize"] else "")
        lines.append(
            f"| {p['size']}x{p['size']}x{p['channels']} | {frame} | {p['batch']} | {_fmt(p['images_per_s'])} "
            f"| {_fmt(p['ms_per_batch_p50'], 3)} |"
        )
    return "\n".join(lines) + "\n"
