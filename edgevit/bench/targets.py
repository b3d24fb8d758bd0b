"""Bench targets: one thing that turns a preprocessed batch into logits, and the one way each
kind is opened.

A target's ``spec`` (a JSON-ready dict) names its kind and files; :func:`open_spec` opens it,
both in the benchmark process and in the fresh process that measures its memory
(:mod:`edgevit.bench.memory`). The kinds:

* ``runtime``: ``edgevit.runtime.load(path, backend=...).predict`` (ONNX Runtime, OpenVINO, TensorRT);
* ``session``: an ONNX Runtime runner's bare ``infer``, without ``predict``;
* ``plain-session``: a plain ``onnxruntime.InferenceSession`` with ONNX Runtime's defaults;
* ``plain-openvino``: OpenVINO's ``compile_model`` with its default hints (ONNX or IR);
* ``torch``: PyTorch eager FP32 from an edgevit checkpoint (imports torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import ArtifactInfo, read_onnx_info
from edgevit.bench.measure import WallTimer, plain_openvino_model, plain_ort_session, timer_for
from edgevit.bench.settings import BenchConfig
from edgevit.bench.variants import nncf_available, nncf_int8, ort_default_int8, policy_variant, random_images
from edgevit.config import PRESETS
from edgevit.errors import BackendError, EdgeVitError
from edgevit.preprocess import Preprocess
from edgevit.runtime.openvino_backend import precision_name

VARIANT_LABELS = {
    "noattn": "variant: our policy, attention matmuls FP32",
    "u8act": "variant: our policy, uint8 asymmetric activations (CPU only)",
}
SPEC_KINDS = ("runtime", "session", "plain-session", "plain-openvino", "torch")


@dataclass
class Opened:
    """What :func:`open_spec` loaded: the call to time, how to release it, and the object behind it."""

    infer: Callable[[np.ndarray], Any]
    close: Callable[[], None]
    handle: Any  # the runtime Model, the runner, the session or the torch module
    info: ArtifactInfo | None = None  # a checkpoint's self-description (torch)


def runner_infer(runner: Any) -> Callable[[np.ndarray], Any]:
    """A runner's bare ``infer`` on one batch: no input checks, softmax, top-k or labels."""
    infer_fn, inp = runner.infer, runner.input_name

    def infer(x: np.ndarray) -> Any:
        return infer_fn({inp: x})

    return infer


def open_spec(spec: dict[str, Any], threads: int) -> Opened:
    """Load the target ``spec`` names with ``threads`` CPU threads.

    Raises:
        EdgeVitError: an unknown kind; the loaders' own errors otherwise.
    """
    kind, path = spec.get("kind"), spec.get("path")
    if kind == "runtime":
        from edgevit import runtime

        model = runtime.load(
            path,
            backend=spec["backend"],
            threads=threads,
            precision=spec.get("precision", "default"),
            batch_size=1 << 16,
        )

        def predict(x: np.ndarray) -> Any:
            return model.predict(x, top_k=5)

        return Opened(predict, model.close, model)
    if kind == "session":
        from edgevit.runtime.ort_backend import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(path, threads=threads)
        return Opened(runner_infer(runner), getattr(runner, "close", lambda: None), runner)
    if kind == "plain-session":
        sess = plain_ort_session(path, threads)
        names, inp = [o.name for o in sess.get_outputs()], sess.get_inputs()[0].name

        def run(x: np.ndarray) -> Any:
            return sess.run(names, {inp: x})

        return Opened(run, lambda: None, sess)  # the session goes with the target
    if kind == "plain-openvino":
        compiled = plain_openvino_model(path, threads)
        request = compiled.create_infer_request()

        def infer_ov(x: np.ndarray) -> Any:
            return request.infer({0: x})

        return Opened(infer_ov, lambda: None, compiled)
    if kind == "torch":
        import torch

        from edgevit.train import checkpoint_info, load_checkpoint, model_from_checkpoint

        torch.set_num_threads(threads)
        ckpt = load_checkpoint(path)
        module = model_from_checkpoint(ckpt)

        def forward(x: np.ndarray) -> Any:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()

        return Opened(forward, lambda: None, module, checkpoint_info(ckpt))
    raise EdgeVitError(f"unknown bench target kind {kind!r}; choose one of {', '.join(SPEC_KINDS)}")


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
    spec: dict[str, Any] = field(default_factory=dict)  # how a fresh process opens it (open_spec)
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
    spec: dict[str, Any] = {"kind": "runtime", "path": str(path), "backend": backend, "precision": precision}
    opened = open_spec(spec, threads)
    model = opened.handle
    spec["preprocess"] = model.preprocess.to_dict()
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
        infer=opened.infer,
        close=opened.close,
        preprocess=model.preprocess,
        timer=timer_for(model.runner),
        note=note,
        info=model.info,
        max_batch=model.runner.max_batch,
        runner=model.runner,
        spec=spec,
    )


def _runner_target(base: Target) -> Target:
    """The very runner of ``base``, called directly: what ``predict`` adds (input checks,
    softmax, top-k, labels) is the difference. One runner, so one plan (its modes are timed
    per load, and two loads could settle differently); a fresh process opens its own
    (``session`` spec)."""
    runner, model_path = base.runner, base.artifact
    return Target(
        id=f"{base.group}/ort-int8-session",
        group=base.group,
        kind="ort-int8-session",
        label="our INT8, bare runner.infer (no predict)",
        backend=runner.name,
        precision=base.precision,
        artifact=model_path,
        infer=runner_infer(runner),
        close=lambda: None,  # base closes the runner
        preprocess=base.preprocess,
        note=base.note,
        spec={"kind": "session", "path": str(model_path), "preprocess": base.preprocess.to_dict()},
    )


def _plain_session_target(tid: str, group: str, kind: str, label: str, path: Path, threads: int) -> Target:
    """A plain ``onnxruntime.InferenceSession`` (intra-op threads, all graph optimizations):
    what a user who picks ONNX Runtime instead of edgevit runs."""
    info = read_onnx_info(path)
    spec = {"kind": "plain-session", "path": str(path), "preprocess": info.preprocess.to_dict()}
    opened = open_spec(spec, threads)
    return Target(
        id=tid,
        group=group,
        kind=kind,
        label=label,
        backend=f"onnxruntime:{opened.handle.get_providers()[0]} (plain session)",
        precision=info.precision,
        artifact=path,
        infer=opened.infer,
        close=opened.close,
        preprocess=info.preprocess,
        spec=spec,
    )


def _plain_openvino_target(
    tid: str, group: str, kind: str, label: str, path: Path, info: ArtifactInfo, threads: int
) -> Target:
    """OpenVINO compiling ``path`` with its own default hints: what a user who picks OpenVINO runs."""
    spec = {"kind": "plain-openvino", "path": str(path), "preprocess": info.preprocess.to_dict()}
    opened = open_spec(spec, threads)
    float_parts = precision_name(opened.handle.get_property("INFERENCE_PRECISION_HINT"))
    return Target(
        id=tid,
        group=group,
        kind=kind,
        label=label,
        backend="openvino:CPU (plain compile_model, default hints)",
        precision=f"{'fp32' if kind.startswith('ov-fp32') else 'int8'}+{float_parts}",
        artifact=path,
        infer=opened.infer,
        close=opened.close,
        preprocess=info.preprocess,
        spec=spec,
    )


def _torch_target(checkpoint: Path, threads: int) -> Target:
    opened = open_spec({"kind": "torch", "path": str(checkpoint)}, threads)
    import torch  # already imported by open_spec

    info = opened.info
    if info is None:  # open_spec reads every checkpoint's info; this only narrows the type
        raise EdgeVitError(f"{checkpoint} carries no model description")
    group = group_name(info)
    return Target(
        id=f"{group}/torch-fp32",
        group=group,
        kind="torch-fp32",
        label="PyTorch eager FP32",
        backend=f"torch {torch.__version__} eager",
        precision="fp32",
        artifact=checkpoint,
        infer=opened.infer,
        close=opened.close,
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
            fp32_info = read_onnx_info(fp32)
            if "openvino" in backends:
                log(f"{group}: loading OpenVINO FP32 with its default hints")
                kind = "ov-fp32-plain"
                label = "OpenVINO FP32 ONNX, its default hints (plain compile_model)"
                targets.append(_plain_openvino_target(f"{group}/{kind}", group, kind, label, fp32, fp32_info, threads))
            calib = random_images(fp32_info.preprocess, cfg.calib_images)
            if cfg.baselines:
                out = workdir / f"{group}.ortdefault.int8.onnx"
                log(f"{group}: quantizing with ONNX Runtime's default quantize_static -> {out}")
                ort_default_int8(fp32, out, calib)
                label = "ONNX Runtime quantize_static defaults INT8"
                kind = "ort-int8-ortdefault"
                targets.append(_runtime_target(f"{group}/{kind}", group, kind, label, out, "onnxruntime", threads))
                notes.append(f"{group}: ONNX Runtime's default INT8 was calibrated on {cfg.calib_images} random images")
                if "openvino" in backends and nncf_available():
                    out = workdir / f"{group}.nncf.int8.xml"
                    log(f"{group}: quantizing with NNCF (ModelType.TRANSFORMER) for OpenVINO -> {out}")
                    nncf_int8(fp32, out, calib)
                    kind = "ov-int8-nncf"
                    label = "NNCF INT8 (TRANSFORMER preset), OpenVINO default hints"
                    targets.append(
                        _plain_openvino_target(f"{group}/{kind}", group, kind, label, out, fp32_info, threads)
                    )
                    notes.append(f"{group}: NNCF's INT8 was calibrated on the same {cfg.calib_images} random images")
                elif "openvino" in backends:
                    notes.append(f"{group}: no NNCF INT8 baseline (pip install nncf to add one)")
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
