"""``edgevit bench``: every backend and baseline timed side by side in one process, in
interleaved rounds, so that each reported ratio compares numbers measured under the same
machine load.

What one run does:

1. load every target (artifact x backend, plus the baselines built from the FP32 model)
   and record the resident memory that loading it added;
2. warm each (target, batch size) case up;
3. for ``rounds`` rounds, run every case for at least ``min_time`` seconds and
   ``min_calls`` calls, starting each round at a different case so slow drifts of the
   machine's load spread over all of them; the load average is recorded every round;
4. report images/s (median over rounds), latency per batch (p50/p90/p99 over all calls),
   memory, and the ratios between targets, all from this run's numbers.

Inputs are random uint8 images preprocessed once before timing: preprocessing is measured
separately (``preprocess`` section), never inside an inference timing.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit import __version__
from edgevit.artifacts import ArtifactInfo, read_onnx_info
from edgevit.bench.measure import WallTimer, peak_rss_mb, plain_ort_session, summarize, timer_for
from edgevit.bench.memory import measure_memory
from edgevit.bench.variants import ort_default_int8, policy_variant, random_images
from edgevit.config import PRESETS
from edgevit.errors import BackendError, EdgeVitError
from edgevit.preprocess import Preprocess
from edgevit.sysinfo import cpu_count, cpu_model, describe_machine

SCHEMA = "edgevit-bench/1"

VARIANT_LABELS = {
    "noattn": "variant: our policy, attention matmuls FP32",
    "u8act": "variant: our policy, uint8 asymmetric activations (CPU only)",
}

# Reference targets every other target is divided by, when present in the same group.
# ``ort-fp32`` runs on edgevit's runner like our INT8 (same threading), so its ratio is the
# gain of INT8 alone; ``ort-fp32-plain`` is a plain ONNX Runtime session, what users run.
REFERENCES = ("ort-fp32", "ort-fp32-plain", "torch-fp32", "ort-int8-ortdefault")

# The CPU targets: (name, numerator kind, denominator kind, threshold).
SPEED_CLAIMS = (
    ("our INT8 (ONNX Runtime) vs ONNX Runtime FP32 on the same runner", "ort-int8", "ort-fp32", 1.6),
    ("our INT8 (ONNX Runtime) vs a plain ONNX Runtime FP32 session", "ort-int8", "ort-fp32-plain", 1.6),
    ("our INT8 (ONNX Runtime) vs PyTorch eager FP32", "ort-int8", "torch-fp32", 2.0),
    ("our INT8 (OpenVINO backend, its edgevit default) vs ONNX Runtime FP32", "ov-int8", "ort-fp32", 2.5),
    ("our INT8 (ONNX Runtime) vs ONNX Runtime's default quantize_static INT8", "ort-int8", "ort-int8-ortdefault", 1.5),
)
CLAIM_BATCH = 8
CLAIM_GROUPS = ("tiny",)  # the issue states its speed targets for the DeiT-Tiny shape
PREDICT_OVERHEAD_MAX = 0.05
PREPROCESS_CLAIMS = ((32, 3, 2000.0), (224, 3, 400.0))  # (size, channels, images/s)
SIZE_RATIO_MAX = 0.30


@dataclass
class BenchConfig:
    """What to measure and how long.

    Args:
        artifacts: ``.onnx`` models (FP32 and/or INT8) and TensorRT ``.engine``/``.plan`` files.
        checkpoints: edgevit checkpoints: each adds a PyTorch eager FP32 baseline (imports torch).
        backends: backends for ``.onnx`` artifacts (``onnxruntime``, ``openvino``); ``None``:
            ONNX Runtime, plus OpenVINO when it is installed. Engines always run on TensorRT.
        batch_sizes: images per call.
        threads: CPU threads for every CPU backend (``None``: every core), stated in the output.
        baselines: build ONNX Runtime's default ``quantize_static`` INT8 from the FP32 model.
        variants: also build and time other Q/DQ placements (see :mod:`edgevit.bench.variants`).
        rounds, min_time, min_calls, warmup: how long each case runs.
        memory: measure peak memory, each target in a fresh process (after the timing).
        workdir: where built models go (baselines, variants).
        notes: lines copied into the report (e.g. "random weights").
    """

    artifacts: list[Path] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    backends: list[str] | None = None
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    threads: int | None = None
    baselines: bool = True
    variants: bool = False
    rounds: int = 5
    min_time: float = 1.0
    min_calls: int = 3
    warmup: int = 2
    preprocess_rounds: int = 3
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "edgevit-bench")
    memory: bool = True
    calib_images: int = 16
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise EdgeVitError(f"batch sizes must be positive integers, got {self.batch_sizes}")
        if self.rounds < 1 or self.min_calls < 1 or self.min_time < 0 or self.warmup < 0:
            raise EdgeVitError("rounds and min_calls must be at least 1, min_time and warmup not negative")
        if self.threads is not None and self.threads < 1:
            raise EdgeVitError(f"threads must be at least 1, got {self.threads}")


@dataclass
class Target:
    """One thing that turns a preprocessed batch into logits."""

    id: str
    group: str
    kind: str
    label: str
    backend: str
    precision: str
    artifact: Path | None
    infer: Callable[[np.ndarray], Any]
    close: Callable[[], None]
    preprocess: Preprocess
    timer: Any = field(default_factory=WallTimer)
    note: str | Callable[[], str] = ""  # a callable is read when the report is written
    info: ArtifactInfo | None = None  # the artifact's self-description (its shape names the group)
    spec: dict[str, Any] = field(default_factory=dict)  # how a fresh process loads it (memory)
    max_batch: int | None = None  # a TensorRT profile's largest batch; larger cases are skipped
    runner: Any = None  # the runtime runner behind ``infer``, when there is one
    memory: dict[str, Any] = field(default_factory=dict)

    def describe(self, threads: int) -> dict[str, Any]:
        size = self.artifact.stat().st_size if self.artifact is not None and self.artifact.is_file() else None
        return {
            "id": self.id,
            "group": self.group,
            "kind": self.kind,
            "label": self.label,
            "backend": self.backend,
            "precision": self.precision,
            "artifact": str(self.artifact) if self.artifact else None,
            "file_mb": round(size / 2**20, 3) if size is not None else None,
            "threads": threads,
            "timer": self.timer.method,
            "mem_load_mb": self.memory.get("load_mb"),
            "memory_error": self.memory.get("error"),
            "note": self.note() if callable(self.note) else self.note,
        }


def group_name(info: ArtifactInfo) -> str:
    """The preset's name when the model has a preset's shape, else a short shape tag (an
    imported ONNX without a model config: its input size and class count)."""
    cfg = info.model_config
    if cfg is not None:
        for name, p in PRESETS.items():
            if p.replace(num_classes=cfg.num_classes) == cfg:
                return name
    return info.shape_name()


def default_backends() -> list[str]:
    backends = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        backends.append("openvino")
    except ImportError:
        pass
    return backends


# -- loading targets ---------------------------------------------------------------------
def _runtime_target(
    tid: str, group: str, kind: str, label: str, path: Path, backend: str, threads: int, precision: str = "default"
) -> Target:
    from edgevit import runtime

    model = runtime.load(path, backend=backend, threads=threads, precision=precision, batch_size=1 << 16)

    def infer(x: np.ndarray) -> Any:
        return model.predict(x, top_k=5)

    prec = model.info.precision
    note: str | Callable[[], str] = ""
    if backend == "onnxruntime":
        runner = model.runner

        def note() -> str:  # read when the report is written: the first calls decide the plan
            return f"{runner.describe_modes()}; {runner.rewrites}"  # type: ignore[attr-defined]

    if backend == "openvino":
        prec = f"{prec}+{model.runner.inference_precision}"  # type: ignore[attr-defined]
    return Target(
        id=tid,
        group=group,
        kind=kind,
        label=label,
        backend=model.backend,
        precision=prec,
        artifact=path,
        infer=infer,
        close=model.close,
        preprocess=model.preprocess,
        timer=timer_for(model.runner),
        note=note,
        info=model.info,
        max_batch=model.runner.max_batch,
        runner=model.runner,
        spec={
            "kind": "runtime",
            "path": str(path),
            "backend": backend,
            "precision": precision,
            "preprocess": model.preprocess.to_dict(),
        },
    )


def _runner_target(base: Target) -> Target:
    """The very runner of ``base``, called directly: what ``predict`` adds (input checks,
    softmax, top-k, labels) is the difference. One runner, so one plan (its modes are timed
    per load, and two loads could settle differently)."""
    runner, model_path = base.runner, base.artifact
    infer_fn, inp = runner.infer, runner.input_name

    def infer(x: np.ndarray) -> Any:
        return infer_fn({inp: x})

    return Target(
        id=f"{base.group}/ort-int8-session",
        group=base.group,
        kind="ort-int8-session",
        label="our INT8, bare runner.infer (no predict)",
        backend=runner.name,
        precision=base.precision,
        artifact=model_path,
        infer=infer,
        close=lambda: None,  # base closes the runner
        preprocess=base.preprocess,
        note=base.note,
        spec={"kind": "session", "path": str(model_path), "preprocess": base.preprocess.to_dict()},
    )


def _plain_session_target(tid: str, group: str, kind: str, label: str, path: Path, threads: int) -> Target:
    """A plain ``onnxruntime.InferenceSession`` (intra-op threads, all graph optimizations):
    what a user who picks ONNX Runtime instead of edgevit runs."""
    sess = plain_ort_session(path, threads)
    names, inp = [o.name for o in sess.get_outputs()], sess.get_inputs()[0].name
    info = read_onnx_info(path)

    def infer(x: np.ndarray) -> Any:
        return sess.run(names, {inp: x})

    return Target(
        id=tid,
        group=group,
        kind=kind,
        label=label,
        backend=f"onnxruntime:{sess.get_providers()[0]} (plain session)",
        precision=info.precision,
        artifact=path,
        infer=infer,
        close=lambda: None,  # the session goes with the target
        preprocess=info.preprocess,
        spec={"kind": "plain-session", "path": str(path), "preprocess": info.preprocess.to_dict()},
    )


def _torch_target(checkpoint: Path, threads: int) -> Target:
    import torch

    from edgevit.train import checkpoint_info, load_checkpoint, model_from_checkpoint

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    info = checkpoint_info(ckpt)
    model = model_from_checkpoint(ckpt)

    def infer(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    group = group_name(info)
    return Target(
        id=f"{group}/torch-fp32",
        group=group,
        kind="torch-fp32",
        label="PyTorch eager FP32",
        backend=f"torch {torch.__version__} eager",
        precision="fp32",
        artifact=checkpoint,
        infer=infer,
        close=lambda: None,
        preprocess=info.preprocess,
        spec={"kind": "torch", "path": str(checkpoint), "preprocess": info.preprocess.to_dict()},
    )


def build_targets(cfg: BenchConfig, threads: int, log: Callable[[str], None]) -> tuple[list[Target], list[str]]:
    """Load every target the configuration asks for; returns them and notes for the report."""
    notes: list[str] = []
    targets: list[Target] = []
    backends = cfg.backends or default_backends()
    for b in backends:
        if b not in ("onnxruntime", "openvino"):
            raise BackendError(f"unknown bench backend {b!r}; choose onnxruntime or openvino (engines use tensorrt)")
    if "openvino" in backends:
        from edgevit.runtime.openvino_backend import import_openvino

        import_openvino()  # a missing package is one clear error, before any timing

    onnx_by_group: dict[str, dict[str, Path]] = {}
    for path in cfg.artifacts:
        path = Path(path)
        if not path.exists():
            raise EdgeVitError(f"{path} does not exist")
        if path.suffix.lower() in (".engine", ".plan"):
            t = _runtime_target("", "", "", "", path, "tensorrt", threads)
            t.group = group_name(t.info) if t.info else path.stem
            t.kind = f"trt-{t.precision}"
            t.id = f"{t.group}/{t.kind}:{path.stem}"
            t.label = f"TensorRT engine {path.name}"
            targets.append(t)
            continue
        info = read_onnx_info(path)
        group = group_name(info)
        role = "int8" if info.precision == "int8" else "fp32"
        slot = onnx_by_group.setdefault(group, {})
        if role in slot:
            raise EdgeVitError(
                f"two {role} models of the {group} shape ({slot[role].name}, {path.name}); bench one per precision"
            )
        slot[role] = path

    workdir = Path(cfg.workdir)
    for group, paths in onnx_by_group.items():
        fp32, int8 = paths.get("fp32"), paths.get("int8")
        if fp32 is not None:
            log(f"{group}: loading ONNX Runtime FP32")
            targets.append(
                _runtime_target(
                    f"{group}/ort-fp32",
                    group,
                    "ort-fp32",
                    "ONNX Runtime FP32",
                    fp32,
                    "onnxruntime",
                    threads,
                )
            )
            targets.append(
                _plain_session_target(
                    f"{group}/ort-fp32-plain",
                    group,
                    "ort-fp32-plain",
                    "ONNX Runtime FP32, plain session (its intra-op threads)",
                    fp32,
                    threads,
                )
            )
            calib = random_images(read_onnx_info(fp32).preprocess, cfg.calib_images)
            if cfg.baselines:
                out = workdir / f"{group}.ortdefault.int8.onnx"
                log(f"{group}: quantizing with ONNX Runtime's default quantize_static -> {out}")
                ort_default_int8(fp32, out, calib)
                label = "ONNX Runtime quantize_static defaults INT8"
                kind = "ort-int8-ortdefault"
                targets.append(_runtime_target(f"{group}/{kind}", group, kind, label, out, "onnxruntime", threads))
                notes.append(f"{group}: ONNX Runtime's default INT8 was calibrated on {cfg.calib_images} random images")
            if cfg.variants:
                for variant, label in VARIANT_LABELS.items():
                    out = workdir / f"{group}.{variant}.int8.onnx"
                    log(f"{group}: building the Q/DQ variant {variant} -> {out}")
                    policy_variant(fp32, out, calib, variant)
                    kind = f"ort-int8-{variant}"
                    targets.append(_runtime_target(f"{group}/{kind}", group, kind, label, out, "onnxruntime", threads))
        if int8 is not None:
            if "onnxruntime" in backends:
                log(f"{group}: loading our INT8 on ONNX Runtime")
                label = "our INT8, ONNX Runtime"
                base = _runtime_target(f"{group}/ort-int8", group, "ort-int8", label, int8, "onnxruntime", threads)
                targets.append(base)
                targets.append(_runner_target(base))
                targets.append(
                    _plain_session_target(
                        f"{group}/ort-int8-plain",
                        group,
                        "ort-int8-plain",
                        "our INT8, plain ONNX Runtime session (its intra-op threads)",
                        int8,
                        threads,
                    )
                )
            if "openvino" in backends:
                log(f"{group}: loading our INT8 on OpenVINO")
                for kind, prec, label in (
                    ("ov-int8", "default", "our INT8, OpenVINO (edgevit's default: FP32 float parts)"),
                    ("ov-int8-auto", "auto", "our INT8, OpenVINO (precision auto: OpenVINO's choice)"),
                ):
                    targets.append(
                        _runtime_target(
                            f"{group}/{kind}",
                            group,
                            kind,
                            label,
                            int8,
                            "openvino",
                            threads,
                            precision=prec,
                        )
                    )
    for ckpt in cfg.checkpoints:
        log(f"loading the PyTorch eager FP32 baseline from {ckpt} (imports torch)")
        targets.append(_torch_target(Path(ckpt), threads))
    if not targets:
        raise EdgeVitError("nothing to measure: pass ONNX models, engines, a checkpoint or --preset")
    return targets, notes


# -- timing -------------------------------------------------------------------------------
@dataclass
class _Case:
    target: Target
    batch: int
    x: np.ndarray
    rounds_ms: list[list[float]] = field(default_factory=list)


def _run_case(case: _Case, min_time: float, min_calls: int) -> list[float]:
    timer, fn, x = case.target.timer, case.target.infer, case.x
    times: list[float] = []
    spent = 0.0
    while len(times) < min_calls or spent < min_time * 1e3:
        ms = timer.time(lambda: fn(x))
        times.append(ms)
        spent += ms
    return times


def _inputs(targets: list[Target], batch_sizes: list[int]) -> dict[tuple[str, int], np.ndarray]:
    """One preprocessed random batch per (model group, batch size), shared by its targets."""
    out: dict[tuple[str, int], np.ndarray] = {}
    for t in targets:
        for b in batch_sizes:
            if (t.group, b) not in out:
                out[(t.group, b)] = t.preprocess(random_images(t.preprocess, b, seed=b))
    return out


def measure_preprocess(
    specs: list[tuple[int, int, tuple[int, int]]], batch: int, rounds: int, min_time: float
) -> list[dict[str, Any]]:
    """images/s of ``Preprocess`` on uint8 frames, per (size, channels, frame HxW), interleaved."""
    cases = []
    for size, channels, (h, w) in specs:
        pre = Preprocess(size, channels, (0.5,) * channels, (0.25,) * channels)
        frames = np.random.default_rng(0).integers(0, 256, size=(batch, h, w, channels), dtype=np.uint8)
        pre(frames)  # warm up (imports cv2 when resizing)
        cases.append((size, channels, (h, w), pre, frames, []))
    timer = WallTimer()
    for _ in range(rounds):
        for case in cases:
            pre, frames, times = case[3], case[4], case[5]
            spent = 0.0
            while len(times) < 3 or spent < min_time * 1e3:
                ms = timer.time(lambda p=pre, f=frames: p(f))
                times.append(ms)
                spent += ms
    rows = []
    for size, channels, (h, w), _, _, times in cases:
        st = summarize([times], batch)
        rows.append(
            {
                "size": size,
                "channels": channels,
                "frame": [h, w, channels],
                "batch": batch,
                "resize": (h, w) != (size, size),
                "images_per_s": round(st.throughput, 1),
                "ms_per_batch_p50": round(st.p50_ms, 4),
            }
        )
    return rows


def run_bench(cfg: BenchConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure everything ``cfg`` asks for; returns the JSON-ready report."""
    from tqdm.auto import tqdm

    log = log or (lambda _msg: None)
    threads = cfg.threads or cpu_count()
    load_start = os.getloadavg()
    targets, notes = build_targets(cfg, threads, log)
    inputs = _inputs(targets, cfg.batch_sizes)
    cases = [
        _Case(t, b, inputs[(t.group, b)])
        for t in targets
        for b in cfg.batch_sizes
        if t.max_batch is None or b <= t.max_batch
    ]
    try:
        for case in tqdm(cases, desc="warm-up", disable=not progress, leave=False):
            for _ in range(max(1, cfg.warmup)):
                case.target.infer(case.x)
        load_rounds = []
        bar = tqdm(total=cfg.rounds * len(cases), desc="bench", disable=not progress, leave=False)
        for r in range(cfg.rounds):
            shift = (r * len(cases)) // cfg.rounds
            for case in cases[shift:] + cases[:shift]:
                case.rounds_ms.append(_run_case(case, cfg.min_time, cfg.min_calls))
                bar.update()
            load_rounds.append([round(v, 2) for v in os.getloadavg()])
        bar.close()
    finally:
        for t in targets:
            t.close()
            closer = getattr(t.timer, "close", None)
            if closer is not None:
                closer()

    results = []
    if cfg.memory:
        for t in tqdm(targets, desc="memory", disable=not progress, leave=False):
            t.memory = measure_memory(t.spec, cfg.batch_sizes, threads) if t.spec else {"error": "no spec"}
    for case in cases:
        st = summarize(case.rounds_ms, case.batch)
        mem = case.target.memory.get("batches", {}).get(str(case.batch), {})
        results.append(
            {
                "target": case.target.id,
                "group": case.target.group,
                "kind": case.target.kind,
                "backend": case.target.backend,
                "precision": case.target.precision,
                "batch": case.batch,
                **st.to_dict(),
                "mem_mb": mem.get("added_mb"),
                "peak_rss_mb": mem.get("peak_rss_mb"),
            }
        )

    pre_specs: list[tuple[int, int, tuple[int, int]]] = []
    for t in targets:
        spec = (t.preprocess.size, t.preprocess.channels, (t.preprocess.size, t.preprocess.size))
        if spec not in pre_specs:
            pre_specs.append(spec)
            pre_specs.append((t.preprocess.size, t.preprocess.channels, (480, 640)))
    for size, channels, _ in PREPROCESS_CLAIMS:
        if (size, channels, (size, size)) not in pre_specs:
            pre_specs.append((size, channels, (size, size)))
    log("timing preprocessing")
    preprocess_rows = measure_preprocess(pre_specs, 32, cfg.preprocess_rounds, min(cfg.min_time, 0.5))

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "edgevit": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "description": describe_machine(),
            "cpu": cpu_model(),
            "cores": cpu_count(),
            "python": platform.python_version(),
            "versions": _versions(),
        },
        "threads": threads,
        "loadavg": {
            "start": [round(v, 2) for v in load_start],
            "rounds": load_rounds,
            "end": [round(v, 2) for v in os.getloadavg()],
        },
        "settings": {
            "batch_sizes": list(cfg.batch_sizes),
            "rounds": cfg.rounds,
            "min_time_s": cfg.min_time,
            "min_calls": cfg.min_calls,
            "warmup": cfg.warmup,
            "inputs": "random uint8 images, preprocessed once before timing (preprocessing timed separately)",
            "throughput": "images per second of summed call time, median over the interleaved rounds",
            "latency": "per call (one batch), percentiles over every call of every round",
            "timer": "time.perf_counter around each call; CUDA events on the engine's stream for TensorRT",
            "memory": (
                "measured apart, in a fresh process per target that imports its libraries, loads it and runs "
                "the batch sizes in ascending order: mem_mb = peak RSS above the pre-load peak after this batch "
                "size, peak_rss_mb = that process's peak RSS (Python and libraries included)"
            ),
        },
        "notes": list(cfg.notes) + notes,
        "targets": [t.describe(threads) for t in targets],
        "results": results,
        "preprocess": preprocess_rows,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    report["ratios"] = compute_ratios(report)
    report["claims"] = evaluate_claims(report)
    return report


def _versions() -> dict[str, str]:
    out = {"numpy": np.__version__}
    for name in ("onnxruntime", "openvino", "torch", "tensorrt"):
        mod = __import__("sys").modules.get(name)
        if mod is not None:
            out[name] = str(getattr(mod, "__version__", "?"))
    return out


# -- ratios and claims: computed only from the report's own results ----------------------------
def _throughputs(report: dict[str, Any]) -> dict[tuple[str, str, int], float]:
    return {(r["group"], r["kind"], int(r["batch"])): float(r["throughput"]) for r in report["results"]}


def compute_ratios(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Throughput of every target over each reference target of its group, per batch size."""
    thr = _throughputs(report)
    out = []
    for (group, kind, batch), value in thr.items():
        for ref in REFERENCES:
            den = thr.get((group, ref, batch))
            if den is None or ref == kind:
                continue
            out.append(
                {
                    "group": group,
                    "batch": batch,
                    "numerator": kind,
                    "denominator": ref,
                    "numerator_throughput": value,
                    "denominator_throughput": den,
                    "ratio": round(value / den, 3),
                }
            )
    return out


def evaluate_claims(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, checked against this run's numbers (``met`` is None when not measured)."""
    thr = _throughputs(report)
    groups = sorted({r["group"] for r in report["results"]})
    claims: list[dict[str, Any]] = []
    for group in groups:
        for name, num, den, threshold in SPEED_CLAIMS if group in CLAIM_GROUPS else ():
            a, b = thr.get((group, num, CLAIM_BATCH)), thr.get((group, den, CLAIM_BATCH))
            value = round(a / b, 3) if a is not None and b else None
            claims.append(
                {
                    "group": group,
                    "batch": CLAIM_BATCH,
                    "claim": f"{name} >= {threshold}x",
                    "numerator": num,
                    "denominator": den,
                    "value": value,
                    "threshold": threshold,
                    "met": None if value is None else value >= threshold,
                }
            )
        for batch in sorted({int(r["batch"]) for r in report["results"] if r["group"] == group}):
            a, b = thr.get((group, "ort-int8", batch)), thr.get((group, "ort-int8-session", batch))
            if a is None or not b:
                continue
            overhead = round(b / a - 1.0, 4)
            claims.append(
                {
                    "group": group,
                    "batch": batch,
                    "claim": f"predict() overhead over a bare runner.infer <= {PREDICT_OVERHEAD_MAX:.0%}",
                    "numerator": "ort-int8-session",
                    "denominator": "ort-int8",
                    "value": overhead,
                    "threshold": PREDICT_OVERHEAD_MAX,
                    "met": overhead <= PREDICT_OVERHEAD_MAX,
                }
            )
        sizes = {t["kind"]: t["file_mb"] for t in report["targets"] if t["group"] == group}
        fp32_mb = sizes.get("ort-fp32")
        int8_mb = sizes.get("ort-int8", sizes.get("ov-int8"))
        if fp32_mb and int8_mb:
            value = round(int8_mb / fp32_mb, 3)
            claims.append(
                {
                    "group": group,
                    "batch": None,
                    "claim": f"INT8 file <= {SIZE_RATIO_MAX:.0%} of the FP32 file",
                    "numerator": "int8 file MB",
                    "denominator": "fp32 file MB",
                    "value": value,
                    "threshold": SIZE_RATIO_MAX,
                    "met": value <= SIZE_RATIO_MAX,
                }
            )
    for size, channels, threshold in PREPROCESS_CLAIMS:
        row = next(
            (p for p in report["preprocess"] if p["size"] == size and p["channels"] == channels and not p["resize"]),
            None,
        )
        value = row["images_per_s"] if row else None
        claims.append(
            {
                "group": None,
                "batch": row["batch"] if row else None,
                "claim": f"preprocessing of {size}x{size}x{channels} uint8 frames >= {threshold:g} images/s",
                "numerator": "images/s",
                "denominator": None,
                "value": value,
                "threshold": threshold,
                "met": None if value is None else value >= threshold,
            }
        )
    return claims
