"""Throughput and latency of ``edgevit serve`` against in-process ``predict()``.

    python benchmarks/bench_serve.py [--presets nano tiny] [--clients 1 4 16] [--seconds 4]

For each preset (``nano``: 8x8 gray digits; ``tiny``: DeiT-Tiny, 224x224 RGB; random
weights, INT8 Q/DQ ONNX made as in ``tests/engine/conftest.py``) it measures

* ``predict``: ``model.predict(one_image)`` in a loop in this process (one image per call,
  the unit a client sends), and ``predict b16``: ``predict`` on batches of 16 (the ceiling
  batching can reach);
* ``serve``: ``edgevit serve`` in a subprocess on loopback ports, with and without Triton's
  dynamic batching, under 1, 4 and 16 concurrent tritonclient HTTP clients, each sending
  one uint8 image per request and waiting for the answer.

Every load loop is bounded: at most ``--seconds`` and ``--max-requests`` per client. It
prints a Markdown table (images/s, p50/p99 latency, ratios to ``predict``) plus the machine
and load average; results are recorded in ``benchmarks/serve.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from edgevit import runtime  # noqa: E402
from edgevit.sysinfo import describe_machine  # noqa: E402

LOOPBACK = "127.0.0.1"


def make_model(preset: str, workdir: Path) -> Path:
    from conftest import make_variants  # tests/engine/conftest.py: random-weight FP32 + INT8 Q/DQ ONNX

    return Path(make_variants(workdir / preset, preset, num_images=4).int8_onnx)


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((LOOPBACK, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class ServeProcess:
    """``edgevit serve`` in a subprocess; always stopped on exit."""

    def __init__(self, artifact: Path, extra: list[str], log: Path):
        self.http, self.grpc, self.metrics = free_ports(3)
        cmd = [sys.executable, "-m", "edgevit.cli", "serve", str(artifact), "--name", "m", "--host", LOOPBACK]
        cmd += ["--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)]
        self.log = log
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [*cmd, *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
            )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edgevit serve exited: {self.log.read_text()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://{LOOPBACK}:{self.http}/v2/models/m/ready", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"edgevit serve not ready in {timeout} s: {self.log.read_text()}")

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def __enter__(self) -> ServeProcess:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def percentiles(latencies: list[float]) -> tuple[float, float]:
    a = np.asarray(latencies) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def bench_predict(model: runtime.Model, images: np.ndarray, seconds: float, max_calls: int, batch: int = 1) -> dict:
    for i in range(3):
        model.predict(images[i : i + batch], top_k=5)  # warm up
    lat: list[float] = []
    n = 0
    t0 = time.perf_counter()
    while len(lat) < max_calls and time.perf_counter() - t0 < seconds:
        s = time.perf_counter()
        i = (len(lat) * batch) % (len(images) - batch)
        model.predict(images[i : i + batch], top_k=5)
        lat.append(time.perf_counter() - s)
        n += batch
    elapsed = time.perf_counter() - t0
    p50, p99 = percentiles(lat)
    return {"ips": n / elapsed, "p50": p50, "p99": p99, "n": n}


def bench_clients(server: ServeProcess, images: np.ndarray, clients: int, seconds: float, max_requests: int) -> dict:
    import tritonclient.http as th

    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    deadline_box: list[float] = []

    def run(c: int) -> None:
        client = th.InferenceServerClient(f"{LOOPBACK}:{server.http}", network_timeout=60.0)
        try:
            x = th.InferInput("images", [1, *images.shape[1:]], "UINT8")
            x.set_data_from_numpy(images[c : c + 1])
            client.infer("m", [x])  # warm the connection
            start.wait()
            for i in range(max_requests):
                if time.perf_counter() > deadline_box[0]:
                    break
                j = (c * 7919 + i) % len(images)
                x = th.InferInput("images", [1, *images.shape[1:]], "UINT8")
                x.set_data_from_numpy(images[j : j + 1])
                s = time.perf_counter()
                client.infer("m", [x])
                lat[c].append(time.perf_counter() - s)
        except Exception as exc:  # recorded and reported: a benchmark must not hide failures
            errors.append(f"client {c}: {exc}")
            with contextlib.suppress(threading.BrokenBarrierError):
                start.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    req0, exec0 = server.metric("nv_inference_request_success"), server.metric("nv_inference_exec_count")
    deadline_box.append(time.perf_counter() + seconds)
    start.wait(timeout=120)
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=seconds + 120)
    elapsed = time.perf_counter() - t0
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"load run failed: {errors or 'clients did not finish'}")
    req = server.metric("nv_inference_request_success") - req0
    execs = server.metric("nv_inference_exec_count") - exec0
    flat = [v for per in lat for v in per]
    p50, p99 = percentiles(flat)
    return {"ips": len(flat) / elapsed, "p50": p50, "p99": p99, "n": len(flat), "avg_batch": req / max(execs, 1)}


def row(preset: str, path: str, clients: int, batch: str, r: dict, ref: dict | None) -> str:
    ratio = f"{r['ips'] / ref['ips']:.2f}x | {r['p50'] / ref['p50']:.1f}x" if ref else "- | -"
    return f"| {preset} | {path} | {clients} | {batch} | {r['ips']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {ratio} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["nano", "tiny"])
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each load run (bounded)")
    ap.add_argument("--max-requests", type=int, default=2000, help="per client per run (bounded)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-queue-delay-us", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads, in-process and in the server")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)

    load0 = os.getloadavg()
    rows: list[str] = []
    modes = {
        "serve, dynamic batching": ["--max-queue-delay-us", str(args.max_queue_delay_us)],
        "serve, no batching": ["--no-dynamic-batching"],
    }
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = args.workdir or Path(tmp)
        for preset in args.presets:
            artifact = make_model(preset, work)
            with runtime.load(artifact, threads=args.threads) as model:
                size, ch = model.preprocess.size, model.preprocess.channels
                images = np.random.default_rng(0).integers(0, 256, (64, size, size, ch), dtype=np.uint8)
                before = bench_predict(model, images, args.seconds, args.max_requests * 4)
                b16 = bench_predict(model, images, args.seconds, args.max_requests, batch=16)
            print(f"{preset}: predict {before['ips']:.0f} images/s, batches of 16 {b16['ips']:.0f}", flush=True)
            served = []
            for mode, extra in modes.items():
                with ServeProcess(
                    artifact,
                    ["--max-batch", str(args.max_batch), "--threads", str(args.threads), *extra],
                    work / "serve.log",
                ) as server:
                    for clients in args.clients:
                        r = bench_clients(server, images, clients, args.seconds, args.max_requests)
                        served.append((mode, clients, r))
                        print(f"{preset}: {mode}, {clients} clients: {r['ips']:.0f} images/s", flush=True)
            with runtime.load(
                artifact, threads=args.threads
            ) as model:  # again after the load runs: the machine is shared
                after = bench_predict(model, images, args.seconds, args.max_requests * 4)
            ref = max((before, after), key=lambda r: r["ips"])  # ratios against the faster predict() run
            rows.append(row(preset, "in-process predict(1 image), before", 1, "-", before, ref))
            rows.append(row(preset, "in-process predict(1 image), after", 1, "-", after, ref))
            rows.append(row(preset, "in-process predict(16 images)", 1, "16", b16, None))
            for mode, clients, r in served:
                rows.append(row(preset, mode, clients, f"{r['avg_batch']:.1f}", r, ref))
    load1 = os.getloadavg()
    from importlib.metadata import version

    import onnxruntime as ort

    print()
    print(f"Machine: {describe_machine()}; numpy {np.__version__}, onnxruntime {ort.__version__}, ", end="")
    print(f"tritonclient {version('tritonclient')}, nvidia-pytriton {version('nvidia-pytriton')}; ", end="")
    print(f"ONNX Runtime threads: {args.threads}, max batch {args.max_batch}, queue delay {args.max_queue_delay_us} us")
    print(f"Load average (1/5/15 min) before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; ", end="")
    print(f"after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print()
    print("| preset | path | clients | avg batch | images/s | p50 ms | p99 ms | images/s vs predict | p50 vs predict |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
