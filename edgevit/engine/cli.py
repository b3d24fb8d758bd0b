"""``edgevit build``: the subcommand the main CLI registers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgevit.engine.builder import (
    DEFAULT_BATCH,
    MODES,
    PRECISIONS,
    BuildOptions,
    build_engine,
    parse_batch,
    print_trtexec,
)
from edgevit.errors import BackendError

HELP = "build a TensorRT engine (plan + manifest) from an ONNX model, on the device that will run it"


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "build",
        help=HELP,
        description=HELP + ". INT8 comes from the Q/DQ ONNX of `edgevit quantize` (or, on TensorRT 8.x-10.x, "
        "from the FP32 ONNX plus --calib-cache); FP16 from the same ONNX converted to FP16 (TensorRT >= 10.12) "
        "or the FP16 builder flag (older).",
    )
    p.add_argument("onnx", type=Path, help="the FP32 ONNX or the INT8 Q/DQ ONNX")
    p.add_argument(
        "-o", "--output", type=Path, help="engine path (.engine/.plan); default engines/<model>.<precision>.engine"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32, fp16, int8 (INT8 + FP32 rest) or best (INT8 + FP16 rest); default best for a Q/DQ ONNX, else fp16",
    )
    p.add_argument(
        "--batch",
        default=":".join(map(str, DEFAULT_BATCH)),
        help="dynamic batch profile min:opt:max (default %(default)s)",
    )
    p.add_argument("--workspace", type=int, metavar="MIB", help="builder workspace limit in MiB (default: TensorRT's)")
    p.add_argument("--opt-level", type=int, metavar="0-5", help="builder optimization level (TensorRT 8.6+; default 3)")
    p.add_argument(
        "--dla-core", type=int, metavar="N", help="build for DLA core N with GPU fallback (Xavier, AGX Orin, Orin NX)"
    )
    p.add_argument(
        "--calib-cache", type=Path, help="implicit INT8 (TensorRT < 11): the calibration cache of `edgevit quantize`"
    )
    p.add_argument(
        "--calib-table", type=Path, help="calibration table (.json) whose ranges are checked against FP16's range"
    )
    p.add_argument("--timing-cache", type=Path, help="timing cache file (default engines/timing/<trt>-<gpu>.cache)")
    p.add_argument("--no-timing-cache", action="store_true", help="neither read nor write a timing cache")
    p.add_argument("--mode", choices=MODES, default="auto", help="build mode (default: from the TensorRT version)")
    p.add_argument(
        "--engines-dir", type=Path, default=Path("engines"), help="where engines and caches go (default %(default)s)"
    )
    p.add_argument(
        "--print-trtexec",
        action="store_true",
        help="print the equivalent trtexec command (after preparing its inputs); build nothing",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="parse and build with whatever TensorRT is importable (tensorrt-rtx on a CPU-only machine) and write "
        "nothing: proves TensorRT accepts the graph, not a device engine",
    )
    p.add_argument("--trt-version", help="with --print-trtexec where TensorRT is not installed: the device's version")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a summary")
    p.set_defaults(func=handler)
    return p


def handler(args: argparse.Namespace) -> int:
    opts = BuildOptions(
        onnx=args.onnx,
        output=args.output,
        precision=args.precision,
        batch=parse_batch(args.batch),
        workspace_mib=args.workspace,
        opt_level=args.opt_level,
        timing_cache=args.timing_cache,
        use_timing_cache=not args.no_timing_cache,
        dla_core=args.dla_core,
        calib_cache=args.calib_cache,
        calib_table=args.calib_table,
        mode=args.mode,
        engines_dir=args.engines_dir,
        allow_rtx=args.check,
    )
    if args.check:
        result = build_engine(opts, write=False)
        print(
            f"ok: TensorRT accepted {args.onnx} ({result.plan.mode}, precision {result.plan.precision}); "
            f"plan of {result.plan_bytes / 1e6:.1f} MB built in {result.seconds:.1f} s and discarded"
        )
        return 0
    if args.print_trtexec:
        print(print_trtexec(opts, args.trt_version))
        return 0
    result = build_engine(opts)
    m = result.manifest
    if m is None or result.engine is None:  # build_engine(write=True) always sets both
        raise BackendError("the build returned no engine")
    if args.json:
        print(json.dumps(m.to_dict(), indent=2))
        return 0
    out = sys.stdout
    print(f"engine    {result.engine}  ({m.engine_bytes / 1e6:.1f} MB, built in {m.build_seconds:.1f} s)", file=out)
    print(f"manifest  {result.engine}.json", file=out)
    print(f"tensorrt  {m.tensorrt_version} ({m.build_mode}), {m.device.describe()}", file=out)
    prof = m.profile
    print(
        f"precision {m.precision} ({m.precision_check}); batch {prof['min'][0]}:{prof['opt'][0]}:{prof['max'][0]}",
        file=out,
    )
    if m.layer_precisions:
        print(f"layers    {m.layer_precisions.get('by_precision')}", file=out)
    for w in result.warnings[-5:]:
        print(f"note      {' '.join(w.split())[:200]}", file=out)
    return 0
