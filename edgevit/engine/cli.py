"""``edgevit build``: the subcommand the main CLI registers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgevit.engine.options import DEFAULT_BATCH_PROFILE, MODES, PRECISIONS, BuildOptions, parse_batch_profile
from edgevit.errors import ArtifactError, BackendError

HELP = "build a TensorRT engine (+ manifest) from an ONNX model, on the device that will run it"


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "build",
        help=HELP,
        allow_abbrev=False,  # `--batch` must not quietly mean --batch-profile (it meant images per call)
        description=HELP + ". INT8 comes from the Q/DQ ONNX of `edgevit quantize` (or, on TensorRT 8.x-10.x, "
        "from the FP32 ONNX plus --calib-cache); FP16 from the same ONNX converted to FP16 (TensorRT >= 10.12) "
        "or the FP16 builder flag (older). TensorRT < 8.6 gets LayerNorm decomposed into primitive ops.",
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
        "--batch-profile",
        default=":".join(map(str, DEFAULT_BATCH_PROFILE)),
        metavar="MIN:OPT:MAX",
        help="the engine's batch sizes (default %(default)s; DLA needs min = opt = max)",
    )
    p.add_argument("--workspace", type=int, metavar="MIB", help="builder workspace limit in MiB (default: TensorRT's)")
    p.add_argument("--opt-level", type=int, metavar="0-5", help="builder optimization level (TensorRT 8.6+; default 3)")
    p.add_argument(
        "--dla-core",
        type=int,
        metavar="N",
        help="build for DLA core N with GPU fallback (Xavier, AGX Orin, Orin NX); needs a static --batch-profile",
    )
    p.add_argument(
        "--calib-cache", type=Path, help="implicit INT8 (TensorRT < 11): the calibration cache of `edgevit quantize`"
    )
    p.add_argument(
        "--range-table",
        type=Path,
        help="calibration table (.json) whose ranges are checked against FP16's range (FP16 conversion)",
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
        help="print the equivalent trtexec command (after preparing the files it reads); build nothing",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="say which TensorRT versions (per JetPack) can parse this ONNX (onnx-tensorrt's operator tables), then "
        "parse and build it with whatever TensorRT is importable (tensorrt-rtx on a PC) and write nothing",
    )
    p.add_argument(
        "--trt-version",
        help="the device's TensorRT where it is not installed here: for --print-trtexec, and to limit --check",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a summary")
    p.set_defaults(func=handler)
    return p


def handler(args: argparse.Namespace) -> int:
    opts = BuildOptions(
        onnx=args.onnx,
        output=args.output,
        precision=args.precision,
        batch_profile=parse_batch_profile(args.batch_profile),
        workspace_mib=args.workspace,
        opt_level=args.opt_level,
        timing_cache=args.timing_cache,
        use_timing_cache=not args.no_timing_cache,
        dla_core=args.dla_core,
        calib_cache=args.calib_cache,
        range_table=args.range_table,
        mode=args.mode,
        engines_dir=args.engines_dir,
        allow_rtx=args.check,
    )
    if args.check:
        return _check(opts, args.trt_version)
    if args.print_trtexec:
        from edgevit.engine.trtexec import print_trtexec

        print(print_trtexec(opts, args.trt_version))
        return 0
    from edgevit.engine.build import build_engine

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
    if m.dla:
        print(f"dla       {_dla_line(m.dla)}", file=out)
    for w in result.warnings[-5:]:
        print(f"note      {' '.join(w.split())[:200]}", file=out)
    return 0


def _dla_line(dla: dict[str, Any]) -> str:
    parts = []
    if "dla_capable_layers" in dla:
        parts.append(f"{dla['dla_capable_layers']} of {dla.get('network_layers', '?')} network layers DLA-capable")
    if "dla_subgraphs" in dla:
        parts.append(f"{dla['dla_subgraphs']} DLA subgraph(s), {dla.get('gpu_layers', '?')} GPU layer(s) (builder log)")
    if "dla_regions" in dla:
        parts.append(f"{dla['dla_regions']} DLA region(s) in the engine inspector")
    gpu = dla.get("gpu_layer_types") or {}
    if gpu:
        parts.append("on the GPU: " + ", ".join(f"{k} x{v}" for k, v in sorted(gpu.items())))
    return "; ".join(parts)


def _check(opts: BuildOptions, trt_version: str | None) -> int:
    """``--check``: the operator tables for every JetPack's TensorRT, then a real parse and build."""
    from edgevit.engine.build import build_engine
    from edgevit.engine.opcheck import check_targets
    from edgevit.engine.prepare import load_onnx, source_kind
    from edgevit.trt.trtapi import CHECK_HINT, import_tensorrt

    _, is_qdq = source_kind(opts)
    model = load_onnx(opts.onnx)
    if model is None:
        raise BackendError("--check reads the graph with the onnx package: `pip install onnx`")
    targets = [("", trt_version)] if trt_version else None
    checks = check_targets(model, is_qdq, opts.precision, targets)
    print(f"{opts.onnx}: which TensorRT parses the graph `edgevit build` gives it (onnx-tensorrt operator tables)")
    for c in checks:
        print(f"  {c.line()}")
    failed = [c for c in checks if not c.ok]
    try:
        import_tensorrt(allow_rtx=True, prefer_rtx=True, hint=CHECK_HINT)
    except BackendError as exc:
        print(f"note: TensorRT's own parser was not run: {exc}")
    else:
        result = build_engine(
            BuildOptions(**{**opts.__dict__, "prefer_rtx": True, "allow_rtx": True, "dla_core": None}), write=False
        )
        v = result.version
        print(
            f"ok: {v} parsed and built {opts.onnx} ({result.setup.mode}, precision {result.setup.precision}); "
            f"engine of {result.engine_size / 1e6:.1f} MB built in {result.seconds:.1f} s and discarded "
            "(proves the graph, not a device engine)"
        )
    if trt_version and failed:
        raise ArtifactError(f"TensorRT {trt_version} cannot parse {opts.onnx}: {'; '.join(failed[0].problems)}")
    return 0
