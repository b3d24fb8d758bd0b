"""Capture-to-result latency of the camera loop on a live RTSP stream, against a plain
GStreamer client on the same stream.

    python benchmarks/bench_camera_latency.py [--model runs/digits-nano/model.int8.onnx]
        [--fps 15] [--size 240] [--seconds 8] [--rounds 2] [--json benchmarks/camera-latency.json]

It starts GStreamer's RTSP test server (tests/stream/servers/rtsp_server.py, system python3
with PyGObject: see .ci/run) on 127.0.0.1. Every frame carries its frame number and its
send time (the sender's wall clock, written into the pixels just before encoding). Then,
in interleaved rounds:

* ``gstreamer``: benchmarks/gst_client_latency.py, ``rtspsrc latency=0 ! rtph264depay !
  h264parse ! openh264dec ! appsink``: latency = the moment the decoded frame reaches
  appsink minus its send time (what a client can do at best: encode, RTP, decode);
* ``edgevit``: ``edgevit.stream.Stream`` on the same URL (the model runs, results go
  through the loop as in ``edgevit camera``): latency = the moment the result comes out of
  the stream minus the frame's send time, read back from ``result.frame``. Also recorded:
  the loop's own ``latency_ms`` (from the reader returning the frame) and how far
  ``capture_timestamp`` (RTCP-based, when the backend gives it) is from the send time.

The difference of the medians, in frame intervals, is the figure of issue #17 (target:
within 1.5 frames). The first 2 s of each run are left out (the stream's start).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / "tests" / "stream" / "servers"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(SERVERS))

import framecode  # noqa: E402

from edgevit import runtime  # noqa: E402
from edgevit.stream import Stream  # noqa: E402
from edgevit.stream.cli import find_default_model  # noqa: E402

SYSTEM_PY = "/usr/bin/python3"
WARMUP_S = 2.0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {
        "n": len(v),
        "median": round(statistics.median(v), 2),
        "p90": round(v[int(0.9 * (len(v) - 1))], 2),
        "min": round(v[0], 2),
        "max": round(v[-1], 2),
    }


def start_server(fps: int, size: int) -> tuple[subprocess.Popen, str]:
    cmd = [SYSTEM_PY, str(SERVERS / "rtsp_server.py"), "--port", "0", "--fps", str(fps)]
    cmd += ["--width", str(size), "--height", str(size), "--max-seconds", "600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit(f"the RTSP test server did not start ({line!r}); see .ci/run for the packages it needs")
    return proc, line.split()[1]


def run_gstreamer(url: str, seconds: float) -> dict:
    cmd = [SYSTEM_PY, str(ROOT / "benchmarks" / "gst_client_latency.py"), url, "--json"]
    cmd += ["--seconds", str(seconds), "--warmup", str(WARMUP_S), "--latency", "0", "--decoder", "openh264dec"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise SystemExit(f"gst_client_latency.py failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def run_edgevit(model: runtime.Model, url: str, seconds: float) -> dict:
    true_ms: list[float] = []
    loop_ms: list[float] = []
    stamp_err_ms: list[float] = []
    bad = 0
    t0 = time.monotonic()
    with Stream(model, [url], duration=seconds + WARMUP_S) as stream:
        for r in stream:
            now = time.time()
            code = framecode.decode_bgr(r.frame)
            if code is None:
                bad += 1
                continue
            if time.monotonic() - t0 < WARMUP_S:
                continue
            true_ms.append(framecode.latency_ms(code[1], now))
            loop_ms.append(r.latency_ms)
            stamp = getattr(r, "capture_timestamp", None)  # (older edgevit: no such field)
            if stamp is not None:
                stamp_err_ms.append(framecode.latency_ms(code[1], stamp))
    st = stream.stats.sources[0]
    return {
        "capture_to_result_ms": summary(true_ms),
        "loop_latency_ms": summary(loop_ms),
        "capture_timestamp_minus_send_ms": summary(stamp_err_ms),
        "undecodable_frames": bad,
        "dropped": st.dropped,
        "failures": st.failures,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="artifact (default: the newest under runs/)")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--size", type=int, default=240, help="frame width and height")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run (after 2 s of warm-up)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="inference threads")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    model_path = args.model or find_default_model()
    server, url = start_server(args.fps, args.size)
    rounds = []
    try:
        with runtime.load(model_path, threads=args.threads) as model:
            for _ in range(args.rounds):
                gst = run_gstreamer(url, args.seconds)
                ev = run_edgevit(model, url, args.seconds)
                rounds.append({"gstreamer": gst, "edgevit": ev})
    finally:
        server.terminate()
        server.wait(10)

    interval_ms = 1000.0 / args.fps
    gst_all = [r["gstreamer"]["latency_ms"]["median"] for r in rounds]
    ev_all = [r["edgevit"]["capture_to_result_ms"]["median"] for r in rounds]
    gst_med, ev_med = statistics.median(gst_all), statistics.median(ev_all)
    load = os.getloadavg()
    record = {
        "stream": f"{args.size}x{args.size} H.264 at {args.fps} fps, rtsp://127.0.0.1 (gst-rtsp-server, x264 zerolatency)",
        "model": str(model_path),
        "machine": {
            "cpu": cpu_name(),
            "os": f"{platform.system()} {platform.release()}",
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": [round(x, 2) for x in load],
        },
        "gstreamer_median_ms": gst_med,
        "edgevit_median_ms": ev_med,
        "difference_frames": round((ev_med - gst_med) / interval_ms, 2),
        "rounds": rounds,
    }
    print(f"stream: {record['stream']}; frame interval {interval_ms:.1f} ms; load average {load[0]:.2f}")
    print("| client | capture-to-result median ms (per round) | p90 ms (last round) |")
    print("|---|---|---|")
    print(
        f"| GStreamer rtspsrc ! openh264dec ! appsink | {gst_med:.1f} ({', '.join(f'{v:.1f}' for v in gst_all)}) | "
        f"{rounds[-1]['gstreamer']['latency_ms'].get('p90')} |"
    )
    print(
        f"| edgevit Stream (result out) | {ev_med:.1f} ({', '.join(f'{v:.1f}' for v in ev_all)}) | "
        f"{rounds[-1]['edgevit']['capture_to_result_ms'].get('p90')} |"
    )
    loop = rounds[-1]["edgevit"]["loop_latency_ms"].get("median")
    print(f"edgevit - GStreamer: {record['difference_frames']:.2f} frames; the loop's own latency_ms median {loop} ms")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
