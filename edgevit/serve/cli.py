"""``edgevit serve`` and ``edgevit export-triton``.

Registered into the main CLI with :func:`register`. Importing this module needs neither
PyTriton nor tritonclient; the commands say how to install them (``edgevit[serve]``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from edgevit.options import add_quiet, add_top_k

SERVE_EXAMPLES = """\
examples:
  edgevit serve runs/digits-nano/model.int8.onnx                 HTTP :8000, gRPC :8001, metrics :8002 on 127.0.0.1
  edgevit serve model.int8.onnx --host 0.0.0.0 --max-batch 64 --max-queue-delay-us 2000 --instances 2 --threads 1
  edgevit serve model.int8.onnx --backend openvino               OpenVINO on an x86 CPU
  edgevit serve model.int8.engine --preferred-batch-size 8 16    a TensorRT engine (Jetson / GPU)
  curl -s 127.0.0.1:8000/v2/health/ready && curl -s 127.0.0.1:8002/metrics | grep nv_inference
"""

EXPORT_EXAMPLES = """\
examples:
  edgevit export-triton runs/digits-nano/model.int8.onnx --out triton-repo --ort-tensorrt int8
  edgevit export-triton model.orin.engine model.a100.engine --out triton-repo --name digits   plans per GPU type
  docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD/triton-repo:/models \\
      nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
"""


def _add_batching_args(p: argparse.ArgumentParser, max_batch_default: int | None, max_batch_help: str) -> None:
    p.add_argument("--max-batch", type=int, default=max_batch_default, help=max_batch_help)
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=500,
        help="longest a request waits in Triton's dynamic batcher for others to join its batch (default 500)",
    )
    p.add_argument(
        "--preferred-batch-size",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="batch sizes the dynamic batcher aims for (default: as large as possible)",
    )
    p.add_argument("--no-dynamic-batching", action="store_true", help="run every request as it comes, unbatched")
    p.add_argument("--instances", type=int, default=1, help="model instances (per GPU for export-triton; default 1)")


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``export-triton`` to an ``argparse`` subparsers object."""
    from edgevit.runtime.cli_args import add_runtime_args  # no torch: runtime only

    p = subparsers.add_parser(
        "serve",
        help="serve an artifact with NVIDIA Triton Inference Server (HTTP, gRPC, metrics, dynamic batching)",
        description="Start a real Triton Inference Server (through PyTriton) serving ARTIFACT.\n"
        "inputs:  'images' uint8 N x H x W x C (any size; the server applies the artifact's preprocessing)\n"
        "         or 'tensor' float32 N x C x S x S (already preprocessed)\n"
        "outputs: 'probs' (softmax over all classes) and 'top_k' (class indices, best first);\n"
        "         class names and preprocessing in the model config's parameters.\n"
        "It says ready (and /v2/health/ready answers 200) once the model answers.\n"
        "A malformed request gets its own error (HTTP 400, gRPC INVALID_ARGUMENT); the other\n"
        "requests of its batch get their results.\n"
        "Ctrl-C or SIGTERM stops it cleanly and ends every process it started.",
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", type=Path, help=".onnx (FP32 or INT8 Q/DQ) or .engine/.plan with its manifest")
    p.add_argument("--name", default=None, help="model name clients use (default: from the file name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    _add_batching_args(p, None, "Triton's max_batch_size (default 32, or an engine profile's max batch if smaller)")
    add_top_k(p)
    add_runtime_args(p, "each model instance")
    add_quiet(p, "start and stop lines on stderr")
    p.set_defaults(func=serve_handler)

    p = subparsers.add_parser(
        "export-triton",
        help="write a Triton model repository (config.pbtxt + model.plan/model.onnx + labels)",
        description="Write a Triton model repository: <repo>/<name>/config.pbtxt, labels.txt, edgevit.json and\n"
        "1/model.plan (TensorRT engines; several plans map by compute capability) or 1/model.onnx.\n"
        "Every config.pbtxt is parsed against Triton's model configuration schema (tritonclient) before it is written.",
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifacts", nargs="+", type=Path, help="one .onnx, or .engine/.plan files (one per GPU type)")
    p.add_argument(
        "--out", type=Path, required=True, help="the model repository folder (created; the model goes in <out>/<name>/)"
    )
    p.add_argument("--name", default=None, help="model name (default: from the first file name)")
    p.add_argument("--version", type=int, default=1, help="model version folder (default 1)")
    _add_batching_args(p, None, "max_batch_size (default: 32 for ONNX, the engine profile's max batch for plans)")
    p.add_argument("--kind", default="auto", choices=["auto", "gpu", "cpu"], help="instance_group kind")
    p.add_argument(
        "--ort-tensorrt",
        default=None,
        choices=["fp32", "fp16", "int8"],
        help="ONNX only: run with ONNX Runtime's TensorRT provider at this precision (int8: Q/DQ models)",
    )
    p.add_argument(
        "--trt-cache-dir", default=None, help="with --ort-tensorrt only: engine cache path inside the container"
    )
    p.set_defaults(func=export_handler)


def serve_handler(args: argparse.Namespace) -> int:
    """Run ``edgevit serve`` until Ctrl-C / SIGTERM; exit code 0 after a clean stop, 130 when
    stopped before the model was ready."""
    from edgevit.errors import BackendError
    from edgevit.serve.server import ServeConfig, TritonModelServer

    config = ServeConfig(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_batch=args.max_batch,
        dynamic_batching=not args.no_dynamic_batching,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=list(args.preferred_batch_size),
        instances=args.instances,
        top_k=args.top_k,
        model_name=args.name,
        backend=args.backend,
        provider=args.provider,
        precision=args.openvino_precision,
        threads=args.threads,
    )
    server = TritonModelServer(args.artifact, config)
    interrupted: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        server.request_stop(name)
        if server.state == "starting" and not interrupted:
            # abandon the load (start() ends what it started); once serving, the flag is enough
            interrupted.append(name)
            raise KeyboardInterrupt(name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        t0 = time.monotonic()
        try:
            server.start()
        except BaseException:
            if not server.stopped_by:
                raise
            # Ctrl-C while loading (in a terminal Triton gets the SIGINT too and dies mid-load):
            # say so rather than blame the model
            _say(
                f"edgevit serve: interrupted ({server.stopped_by}) while loading model '{server.name}'; "
                "stopped, nothing was served"
            )
            return 130
        if not args.quiet:
            m = server.models[0]
            batching = (
                f"dynamic batching up to {server.max_batch}, queue delay {config.max_queue_delay_us} us"
                if config.dynamic_batching
                else f"no dynamic batching, max batch {server.max_batch}"
            )
            _say(
                f"edgevit serve: {args.artifact} as model '{server.name}' ({m.backend}, {m.info.precision}, "
                f"{config.instances} instance(s), {batching}) ready in {time.monotonic() - t0:.1f} s"
            )
            _say(f"  HTTP http://{server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}")
            _say(f"  infer: POST http://{server.http_url}/v2/models/{server.name}/infer   (Ctrl-C to stop)")
        reason = server.wait()
        if reason == "triton-exited":
            raise BackendError(f"Triton stopped unexpectedly: {server.log_tail()}")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not args.quiet:
        stats = [c.stats for c in server.cores]
        refused = sum(s.refused for s in stats)
        _say(
            f"edgevit serve: stopped ({reason}); {sum(s.requests for s in stats)} requests"
            f"{f' ({refused} refused as invalid)' if refused else ''}, "
            f"{sum(s.images for s in stats)} images in {sum(s.backend_calls for s in stats)} backend calls"
        )
    return 0


def export_handler(args: argparse.Namespace) -> int:
    from edgevit.serve.repository import RepositoryOptions, export_triton

    opts = RepositoryOptions(
        name=args.name,
        version=args.version,
        max_batch=args.max_batch,
        dynamic_batching=not args.no_dynamic_batching,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=list(args.preferred_batch_size),
        instances=args.instances,
        kind=args.kind,
        ort_tensorrt=args.ort_tensorrt,
        trt_cache_dir=args.trt_cache_dir,
    )
    result = export_triton(args.artifacts, args.out, opts)
    files = ", ".join(str(f.relative_to(result.model_dir)) for f in result.model_files)
    print(
        f"{result.model_dir}: {result.platform}, max_batch_size {result.max_batch}, {files} "
        f"(config.pbtxt checked against Triton's schema)"
    )
    return 0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
