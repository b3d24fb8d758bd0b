"""Peak memory of one target, measured in a fresh Python process.

In the benchmark process the allocator reuses memory that earlier targets (or building the
models) freed, so resident-memory growth there says little. Here a new interpreter imports
what the target needs, preprocesses its inputs, records its peak resident set size, then
opens the target the way the benchmark does (:func:`edgevit.bench.targets.open_spec`) and
runs each batch size in ascending order; after each batch size it reports the peak RSS
(``VmHWM``) and how much it rose above the pre-load peak.

    python -m edgevit.bench.memory '{"kind": "runtime", "path": "m.onnx", ...}' 1 8 32
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any


def _peak_mb() -> float:
    """Peak RSS of this process image: ``VmHWM`` (reset by exec, unlike ``ru_maxrss``, which
    Linux carries over from the parent that forked us)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _import_backend(spec: dict[str, Any]) -> None:
    """Import what the target needs, so that imports are not counted as its memory."""
    if spec["kind"] == "torch":
        import torch  # noqa: F401

        import edgevit.train
    elif spec.get("backend") == "openvino":
        import openvino  # noqa: F401
    elif spec.get("backend") == "tensorrt":
        import edgevit.runtime.trt_backend
    import onnxruntime  # noqa: F401

    import edgevit.runtime  # noqa: F401


def worker(spec: dict[str, Any], batches: list[int], threads: int) -> dict[str, Any]:
    from edgevit.bench.targets import open_spec
    from edgevit.bench.variants import random_images
    from edgevit.preprocess import Preprocess

    _import_backend(spec)
    pre = Preprocess.from_dict(spec["preprocess"])
    inputs = {b: pre(random_images(pre, b, seed=b)) for b in sorted(batches)}
    baseline = _peak_mb()
    infer = open_spec(spec, threads).infer
    after_load = _peak_mb()
    out: dict[str, Any] = {"baseline_mb": round(baseline, 1), "load_mb": round(after_load - baseline, 1), "batches": {}}
    for b in sorted(batches):
        for _ in range(2):
            infer(inputs[b])
        peak = _peak_mb()
        out["batches"][str(b)] = {"peak_rss_mb": round(peak, 1), "added_mb": round(peak - baseline, 1)}
    return out


def measure_memory(spec: dict[str, Any], batches: list[int], threads: int, timeout: float = 600.0) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter; returns its report (``error`` on failure)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), *filter(None, [env.get("PYTHONPATH")])]
    )
    cmd = [sys.executable, "-m", "edgevit.bench.memory", json.dumps(spec), str(threads), *map(str, batches)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    threads = int(argv[1])
    batches = [int(b) for b in argv[2:]]
    print(json.dumps(worker(spec, batches, threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
