"""Throughput of the camera loop against plain ``predict()`` on the same frames.

    python benchmarks/bench_camera.py [--model runs/digits-nano/model.int8.onnx]

Frames are test-split digits scaled up to camera size (640x480 BGR by default), so both
paths do the same work per frame: BGR->gray, area-resize to 8x8, normalize, infer,
top-5. For batch 1 and 8 it times

* ``infer``: ``model.infer_one_call`` on already preprocessed batches (the backend alone),
* ``predict``: ``model.predict`` in a plain loop over the frames (what a user would write),
* ``loop``: ``Stream`` over the same frames as a file source (capture thread, queue,
  micro-batcher, results and stats; no sinks),

in ``--repeat`` interleaved rounds, and prints the medians of the ratios taken within each
round (loop / predict, and the loop's own overhead over pure inference time).
Then it measures capture-to-result latency on paced live sources (30 fps each).
Results of a run are recorded in ``benchmarks/camera.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgevit import runtime  # noqa: E402
from edgevit.stream import FrameSource, Stream  # noqa: E402
from edgevit.stream.cli import find_default_model  # noqa: E402


def camera_frames(n: int, width: int, height: int) -> list[np.ndarray]:
    import cv2

    from edgevit.data import load_digits

    images = load_digits().test.images
    frames = []
    for i in range(n):
        img = cv2.resize(images[i % len(images)][..., 0], (width, height), interpolation=cv2.INTER_NEAREST)
        frames.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    return frames


def time_infer(model: runtime.Model, frames: list[np.ndarray], batch: int) -> float:
    import cv2

    x = model.preprocess([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames])
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        model.infer_one_call(x[i : i + batch])
    return time.perf_counter() - t0


def time_predict(model: runtime.Model, frames: list[np.ndarray], batch: int) -> float:
    import cv2

    t0 = time.perf_counter()
    for i in range(0, len(frames), batch):
        model.predict([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames[i : i + batch]], top_k=5)
    return time.perf_counter() - t0


def time_loop(model: runtime.Model, frames: list[np.ndarray], batch: int) -> tuple[float, Stream]:
    stream = Stream(model, [FrameSource(frames, "bench://")], batch_size=batch, max_wait_ms=5, top_k=5)
    t0 = time.perf_counter()
    n = sum(1 for _ in stream)
    elapsed = time.perf_counter() - t0
    if n != len(frames):
        raise RuntimeError(f"the loop gave {n} results for {len(frames)} frames")
    return elapsed, stream


def live_latency(model: runtime.Model, frames: list[np.ndarray], sources: int, seconds: float) -> dict:
    srcs = [FrameSource(frames * 10, f"live{i}://", live=True, fps=30.0) for i in range(sources)]
    stream = Stream(model, srcs, batch_size=sources, max_wait_ms=5, duration=seconds)
    for _ in stream:
        pass
    return stream.stats.summary()


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import cv2
    import onnxruntime as ort

    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, onnxruntime {ort.__version__}, "
        f"OpenCV {cv2.__version__}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="artifact (default: the newest under runs/)")
    ap.add_argument("--frames", type=int, default=512)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--repeat", type=int, default=9, help="interleaved rounds (infer, predict, loop in each)")
    ap.add_argument("--live-seconds", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    args = ap.parse_args()

    model_path = args.model or find_default_model(ROOT / "runs")
    model = runtime.load(model_path)
    frames = camera_frames(args.frames, args.width, args.height)
    report: dict = {"machine": machine(), "model": str(model_path), "backend": model.backend, "frames": args.frames}
    report.update(size=f"{args.width}x{args.height}", rounds=args.repeat, load_average=list(os.getloadavg()))
    print(f"machine: {report['machine']}")
    print(
        f"model: {model_path} ({model.backend}, {model.info.precision}); "
        f"{args.frames} frames of {args.width}x{args.height} BGR; {args.repeat} interleaved rounds, medians"
    )
    time_predict(model, frames[:64], 8)  # warm up
    print(
        f"{'batch':>5} {'infer fps':>10} {'predict fps':>12} {'loop fps':>9} {'loop/predict':>13} "
        f"{'IQR':>13} {'overhead/infer':>15} {'loop p50 ms':>12} {'loop p99 ms':>12}"
    )
    report["file"] = []
    for batch in (1, 8):
        infer, predict, loop = [], [], []
        stream = None
        for _ in range(args.repeat):
            infer.append(time_infer(model, frames, batch))
            predict.append(time_predict(model, frames, batch))
            t, stream = time_loop(model, frames, batch)
            loop.append(t)
        n = len(frames)
        ti, tp, tl = (float(np.median(v)) for v in (infer, predict, loop))
        # ratios are taken within a round, between neighbours in time, so the slow phases
        # of a shared machine cancel out; the medians over rounds are reported
        paired = np.array(loop) / np.array(predict)
        # the loop's own overhead (what it adds over a plain predict() loop) as a share of
        # the pure inference time of the same round
        overhead = (np.array(loop) - np.array(predict)) / np.array(infer)
        q1, q3 = np.percentile(paired, [25, 75])
        lat = stream.stats.summary()["latency_ms"] if stream else {}
        row = {
            "batch": batch,
            "infer_fps": n / ti,
            "predict_fps": n / tp,
            "loop_fps": n / tl,
            "loop_over_predict": float(np.median(paired)),
            "loop_over_predict_iqr": [float(q1), float(q3)],
            "overhead_over_infer": float(np.median(overhead)),
            "loop_latency_ms": lat,
            "plan": getattr(model.runner, "describe_modes", lambda: "")(),
        }
        report["file"].append(row)
        print(
            f"{batch:>5} {row['infer_fps']:>10.0f} {row['predict_fps']:>12.0f} {row['loop_fps']:>9.0f} "
            f"{row['loop_over_predict']:>12.3f}x {q1:>6.3f}-{q3:.3f} {row['overhead_over_infer']:>14.1%} "
            f"{lat.get('p50', 0):>12.2f} {lat.get('p99', 0):>12.2f}"
        )
    print("(file source: latency includes the wait in the bounded queue, by design no frame is dropped)")
    report["live"] = []
    for sources in (1, 8):
        s = live_latency(model, frames[:64], sources, args.live_seconds)
        lat = s["latency_ms"]
        report["live"].append({"sources": sources, "fps_each": 30.0, "summary": s})
        print(
            f"live: {sources} source(s) at 30 fps, batch {sources}: {s['fps']:.1f} results/s, "
            f"latency p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, mean batch {s['mean_batch']:.2f}, "
            f"{s['dropped']} dropped"
        )
    print(f"ONNX Runtime plan: {getattr(model.runner, 'describe_plan', lambda: 'n/a')()}")
    model.close()
    if args.json:
        from edgevit.artifacts import write_json_atomic

        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
