"""``edgevit bench``: throughput, latency and memory of artifacts and their baselines.

    edgevit bench runs/digits-nano/model.onnx runs/digits-nano/model.int8.onnx \\
        --checkpoint runs/digits-nano/checkpoint.pt
    edgevit bench --preset tiny --batch-sizes 1 8 32     # DeiT-Tiny shape, random weights

torch is imported only for ``--checkpoint`` (the PyTorch eager baseline) and ``--preset``
(to make the random-weight models).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from edgevit.options import add_quiet


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="throughput/latency/memory of artifacts against PyTorch, ONNX Runtime and OpenVINO baselines",
        description=(
            "Time every artifact on every backend, with the baselines, side by side in interleaved rounds; "
            "print a table and write JSON and a PNG plot."
        ),
    )
    p.add_argument("artifacts", nargs="*", help=".onnx models (FP32 and/or INT8) and TensorRT engines")
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="edgevit checkpoint: adds the PyTorch eager FP32 baseline (imports torch); repeatable",
    )
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        help="also bench random-weight models of this preset (e.g. tiny = DeiT-Tiny shape); repeatable",
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--backends",
        nargs="+",
        choices=("onnxruntime", "openvino"),
        help="backends for .onnx artifacts (default: onnxruntime, plus openvino when installed)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every backend (default: all cores)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; throughput is their median")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds each case runs per round")
    p.add_argument("--min-calls", type=int, default=3, help="calls each case makes per round, at least")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per case before the first round")
    p.add_argument("--no-baselines", action="store_true", help="skip ONNX Runtime's default quantize_static INT8")
    p.add_argument(
        "--variants",
        action="store_true",
        help="also time other Q/DQ placements (attention matmuls FP32; uint8 activations)",
    )
    p.add_argument("--out", default="benchmarks", help="folder for <name>.json and <name>.png")
    p.add_argument("--stem", default="bench", help="file name stem of the outputs (like validate --stem)")
    p.add_argument(
        "--workdir", help="where built models go (default: edgevit-bench in the temp folder; reused across runs)"
    )
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs (a fresh process per target)")
    add_quiet(p)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from edgevit.bench.report import format_report, write_report
    from edgevit.bench.run import BenchConfig, run_bench

    out = Path(args.out)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir()) / "edgevit-bench"
    artifacts = [Path(a) for a in args.artifacts]
    checkpoints = [Path(c) for c in args.checkpoint]
    notes: list[str] = []
    if args.preset:
        from edgevit.bench.synthetic import RANDOM_NOTE, make_synthetic

        for name in args.preset:
            if not args.quiet:
                _say(f"making random-weight {name} models in {workdir}")
            syn = make_synthetic(name, workdir)
            artifacts += [syn.fp32_onnx, syn.int8_onnx]
            checkpoints.append(syn.checkpoint)
            notes.append(f"{name}: {RANDOM_NOTE}")
    cfg = BenchConfig(
        artifacts=artifacts,
        checkpoints=checkpoints,
        backends=args.backends,
        batch_sizes=args.batch_sizes,
        threads=args.threads,
        baselines=not args.no_baselines,
        variants=args.variants,
        rounds=args.rounds,
        min_time=args.min_time,
        min_calls=args.min_calls,
        warmup=args.warmup,
        workdir=workdir,
        memory=not args.no_memory,
        notes=notes,
    )
    report = run_bench(cfg, progress=not args.quiet, log=(lambda m: None) if args.quiet else _say)
    print(format_report(report))
    paths = write_report(report, out, args.stem, plot=not args.no_plot)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
