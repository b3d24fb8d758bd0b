"""``edgevit export-triton``: a Triton model repository for servers that run Triton themselves.

Layout (``<repo>/<name>/``)::

    config.pbtxt        checked against Triton's schema before it is written
    labels.txt          one class name per line (``label_filename`` of the output)
    edgevit.json        the artifact's preprocessing, class names and engine facts
    1/model.plan        a TensorRT engine (platform tensorrt_plan), or
    1/model.onnx        an ONNX model (platform onnxruntime_onnx)

Several plans of the same model built for different GPUs map by compute capability
(``cc_model_filenames``); the first is also ``model.plan``, the default.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.artifacts import ArtifactInfo, atomic_output, read_onnx_info, write_json_atomic, write_text_atomic
from edgevit.errors import ArtifactError, InputError
from edgevit.serve.pbtxt import Enum, check_config, parse_config, validated_text
from edgevit.serve.server import check_model_name, model_name_for

ONNX_SUFFIXES = (".onnx",)
PLAN_SUFFIXES = (".engine", ".plan")
TRT_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int8": "TYPE_INT8", "int32": "TYPE_INT32"}
ORT_TRT_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class RepositoryOptions:
    """What goes into the generated ``config.pbtxt``.

    Args:
        name: model name in the repository (default: from the first artifact's file name).
        version: the version folder (``1``).
        max_batch: ``max_batch_size``; ``None``: 32 for ONNX, the engine profile's max for plans.
        dynamic_batching: add a ``dynamic_batching`` block.
        max_queue_delay_us: ``max_queue_delay_microseconds`` of the dynamic batcher.
        preferred_batch_sizes: ``preferred_batch_size`` of the dynamic batcher.
        instances: instances per device (``instance_group.count``).
        kind: ``auto`` (GPU for plans and the TensorRT provider, CPU otherwise), ``gpu`` or ``cpu``.
        ort_tensorrt: for ONNX: ``None`` or the TensorRT execution provider precision
            (``fp32``, ``fp16``, ``int8``; ``int8`` needs an INT8 Q/DQ artifact).
        trt_cache_dir: for ONNX with TensorRT: where the provider caches built engines
            (a path inside the container), so restarts do not rebuild.
    """

    name: str | None = None
    version: int = 1
    max_batch: int | None = None
    dynamic_batching: bool = True
    max_queue_delay_us: int = 500
    preferred_batch_sizes: list[int] = field(default_factory=list)
    instances: int = 1
    kind: str = "auto"
    ort_tensorrt: str | None = None
    trt_cache_dir: str | None = None


@dataclass
class ExportedModel:
    model_dir: Path
    config_path: Path
    model_files: list[Path]
    platform: str
    max_batch: int
    config_text: str


@dataclass
class _Plan:
    path: Path
    manifest: Any  # edgevit.trt.manifest.Manifest


def export_triton(
    artifacts: Sequence[str | Path], repository: str | Path, options: RepositoryOptions | None = None
) -> ExportedModel:
    """Write ``<repository>/<name>/`` for one ONNX model or one or more TensorRT plans."""
    opts = options or RepositoryOptions()
    paths = [Path(a) for a in artifacts]
    if not paths:
        raise InputError("no artifact given; pass an .onnx model or one or more .engine/.plan files")
    for p in paths:
        if not p.is_file():
            raise ArtifactError(f"{p} does not exist")
    kinds = {
        "onnx" if p.suffix.lower() in ONNX_SUFFIXES else "plan" if p.suffix.lower() in PLAN_SUFFIXES else "?"
        for p in paths
    }
    if "?" in kinds:
        raise ArtifactError(f"unknown artifact type in {[str(p) for p in paths]}; expected .onnx, .engine or .plan")
    if len(kinds) > 1:
        raise InputError("mix of ONNX and TensorRT artifacts; a Triton model is either one ONNX or TensorRT plans")
    if opts.instances < 1:
        raise InputError(f"--instances must be at least 1, got {opts.instances}")
    if opts.version < 1:
        raise InputError(f"--version must be at least 1, got {opts.version}")
    if opts.kind not in ("auto", "gpu", "cpu"):
        raise InputError(f"--kind must be auto, gpu or cpu, got {opts.kind!r}")
    if opts.trt_cache_dir and not opts.ort_tensorrt:
        raise InputError(
            "--trt-cache-dir is the engine cache of ONNX Runtime's TensorRT provider; "
            "it needs --ort-tensorrt (an ONNX model), or drop it"
        )
    name = check_model_name(opts.name or model_name_for(paths[0]))
    model_dir = Path(repository) / name
    _check_folders([Path(repository), model_dir, model_dir / str(opts.version)])
    if kinds == {"onnx"}:
        if len(paths) > 1:
            raise InputError("one ONNX model per Triton model; several files are only for plans of different GPUs")
        message, info, files, extra = _onnx_config(paths[0], name, opts)
    else:
        message, info, files, extra = _plan_config(paths, name, opts)

    where = str(model_dir / "config.pbtxt")
    text = validated_text(message, where)  # refuses anything Triton's schema would refuse, before writing
    version_dir = model_dir / str(opts.version)
    try:
        version_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create {version_dir}: {exc.strerror}") from exc
    written = []
    for src, dst_name in files:
        dst = version_dir / dst_name
        with atomic_output(dst) as tmp:
            shutil.copyfile(src, tmp)
        written.append(dst)
    write_text_atomic(model_dir / "labels.txt", "".join(f"{c}\n" for c in info.class_names))
    write_json_atomic(model_dir / "edgevit.json", {"artifact": info.to_json_dict(), **extra})
    config_path = model_dir / "config.pbtxt"
    write_text_atomic(config_path, text)
    check_repository_model(model_dir)
    return ExportedModel(
        model_dir=model_dir,
        config_path=config_path,
        model_files=written,
        platform=str(message["platform"]),
        max_batch=int(message["max_batch_size"]),
        config_text=text,
    )


def _check_folders(folders: Sequence[Path]) -> None:
    """Refuse, before anything is written, a folder of the repository that is a file (or
    lies under one): ``--out`` names a folder."""
    for folder in folders:
        for p in (folder, *folder.parents):
            if p.exists():
                if not p.is_dir():
                    raise InputError(f"{p} is a file, not a folder; --out names the repository folder")
                break


def check_repository_model(model_dir: str | Path) -> Any:
    """Parse and check ``<model_dir>/config.pbtxt`` and that its model files exist; returns the config."""
    model_dir = Path(model_dir)
    path = model_dir / "config.pbtxt"
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    config = parse_config(path.read_text(encoding="utf-8"), str(path))
    check_config(config, str(path), model_dir=model_dir)
    if config.name and config.name != model_dir.name:
        raise ArtifactError(f"{path} names the model {config.name!r} but its folder is {model_dir.name!r}")
    versions = [d for d in model_dir.iterdir() if d.is_dir() and d.name.isdigit()]
    if not versions:
        raise ArtifactError(f"{model_dir} has no version folder (1/)")
    default = config.default_model_filename or ("model.plan" if config.platform == "tensorrt_plan" else "model.onnx")
    for v in versions:
        needed = {default, *config.cc_model_filenames.values()}
        missing = sorted(f for f in needed if not (v / f).is_file())
        if missing:
            raise ArtifactError(f"{v} is missing {', '.join(missing)}")
    return config


def check_repository(repository: str | Path) -> dict[str, Any]:
    """Check every model folder of a repository; returns ``{name: ModelConfig}``."""
    repository = Path(repository)
    models = sorted(d for d in repository.iterdir() if d.is_dir()) if repository.is_dir() else []
    if not models:
        raise ArtifactError(f"{repository} holds no model folders")
    return {d.name: check_repository_model(d) for d in models}


# -- ONNX -------------------------------------------------------------------------------
def _onnx_io(path: Path) -> tuple[str, list[Any], str, list[Any]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ArtifactError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; expected 1 and 1")
    return inputs[0].name, list(inputs[0].shape), outputs[0].name, list(outputs[0].shape)


def _batching(
    message: dict[str, Any], opts: RepositoryOptions, batch_dynamic: bool, max_batch: int, limit: int | None
) -> None:
    if not batch_dynamic:
        message["max_batch_size"] = 0
        return
    if max_batch < 1:
        raise InputError(f"--max-batch must be at least 1, got {max_batch}")
    if limit is not None and max_batch > limit:
        raise InputError(
            f"--max-batch {max_batch} is outside the engine's optimization profile (max batch {limit}); "
            f"use --max-batch {limit} or rebuild the engine with a larger profile"
        )
    message["max_batch_size"] = max_batch
    if opts.dynamic_batching:
        bad = [b for b in opts.preferred_batch_sizes if not 0 < b <= max_batch]
        if bad:
            raise InputError(f"preferred batch sizes {bad} must be between 1 and max batch {max_batch}")
        db: dict[str, Any] = {}
        if opts.preferred_batch_sizes:
            db["preferred_batch_size"] = [int(b) for b in opts.preferred_batch_sizes]
        db["max_queue_delay_microseconds"] = int(opts.max_queue_delay_us)
        message["dynamic_batching"] = db


def _onnx_config(
    path: Path, name: str, opts: RepositoryOptions
) -> tuple[dict[str, Any], ArtifactInfo, list[tuple[Path, str]], dict[str, Any]]:
    info = read_onnx_info(path)
    in_name, in_shape, out_name, _ = _onnx_io(path)
    batch_dynamic = not isinstance(in_shape[0], int)
    chw = list(info.preprocess.input_shape)
    message: dict[str, Any] = {"name": name, "platform": "onnxruntime_onnx"}
    _batching(message, opts, batch_dynamic, opts.max_batch or 32, None)
    lead = [] if batch_dynamic else [int(in_shape[0])]
    message["input"] = [{"name": in_name, "data_type": Enum("TYPE_FP32"), "dims": lead + chw}]
    message["output"] = [
        {
            "name": out_name,
            "data_type": Enum("TYPE_FP32"),
            "dims": [*lead, len(info.class_names)],
            "label_filename": "labels.txt",
        }
    ]
    if opts.ort_tensorrt is not None:
        precision = opts.ort_tensorrt.lower()
        if precision not in ORT_TRT_PRECISIONS:
            raise InputError(
                f"--ort-tensorrt must be one of {', '.join(ORT_TRT_PRECISIONS)}, got {opts.ort_tensorrt!r}"
            )
        if precision == "int8" and info.precision != "int8":
            raise InputError(
                f"{path.name} is {info.precision}, not an INT8 Q/DQ model; quantize it first "
                "(`edgevit quantize`) or use --ort-tensorrt fp16"
            )
        params: dict[str, Any] = {
            "precision_mode": {"int8": "INT8", "fp16": "FP16", "fp32": "FP32"}[precision],
            "max_workspace_size_bytes": str(1 << 30),
        }
        if opts.trt_cache_dir:
            params["trt_engine_cache_enable"] = "1"
            params["trt_engine_cache_path"] = opts.trt_cache_dir
        message["optimization"] = {
            "execution_accelerators": {
                "gpu_execution_accelerator": [
                    {"name": "tensorrt", "parameters": {k: v for k, v in params.items()}},
                ]
            }
        }
    kind = "KIND_GPU" if opts.kind == "gpu" or (opts.kind == "auto" and opts.ort_tensorrt) else "KIND_CPU"
    if opts.ort_tensorrt and kind != "KIND_GPU":
        raise InputError("--ort-tensorrt runs on a GPU; drop --kind cpu")
    message["instance_group"] = [{"count": opts.instances, "kind": Enum(kind)}]
    message["parameters"] = _parameters(info)
    return message, info, [(path, "model.onnx")], {"source": str(path), "precision": info.precision}


# -- TensorRT plans ---------------------------------------------------------------------
def _plan_config(
    paths: list[Path], name: str, opts: RepositoryOptions
) -> tuple[dict[str, Any], ArtifactInfo, list[tuple[Path, str]], dict[str, Any]]:
    from edgevit.trt.manifest import load_manifest

    plans = [_Plan(p, load_manifest(p)) for p in paths]
    first = plans[0].manifest
    if opts.kind == "cpu":
        raise InputError("a TensorRT plan runs only on a GPU; drop --kind cpu")
    for plan in plans[1:]:
        m = plan.manifest
        if [vars(t) for t in m.io] != [
            vars(t) for t in first.io
        ] or m.artifact.class_names != first.artifact.class_names:
            raise ArtifactError(
                f"{plan.path} is not the same model as {plans[0].path} (inputs, outputs or classes differ); "
                "plans of one Triton model must come from the same ONNX"
            )
    ccs = [p.manifest.device.compute_capability for p in plans]
    if len(set(ccs)) != len(ccs):
        raise InputError(f"two plans for the same compute capability ({ccs}); give one plan per GPU type")
    inp = first.input_spec
    outs = [t for t in first.io if t.mode == "output"]
    batch_dynamic = inp.shape[0] == -1
    # the largest batch every plan's profile accepts; Triton also sends batches down to 1
    limit = min(p.manifest.max_batch for p in plans)
    low = max(int(p.manifest.profile["min"][0]) for p in plans)
    if batch_dynamic and low > 1:
        raise ArtifactError(
            f"the engine profile's min batch is {low}; Triton sends batches from 1 up, rebuild with --batch 1:OPT:MAX"
        )
    message: dict[str, Any] = {"name": name, "platform": "tensorrt_plan"}
    _batching(message, opts, batch_dynamic, opts.max_batch or limit, limit)
    lead = 1 if batch_dynamic else 0
    message["input"] = [
        {"name": inp.name, "data_type": Enum(_trt_dtype(inp.dtype)), "dims": [int(d) for d in inp.shape[lead:]]}
    ]
    message["output"] = [
        {
            "name": t.name,
            "data_type": Enum(_trt_dtype(t.dtype)),
            "dims": [int(d) for d in t.shape[lead:]],
            **({"label_filename": "labels.txt"} if i == 0 else {}),
        }
        for i, t in enumerate(outs)
    ]
    message["instance_group"] = [{"count": opts.instances, "kind": Enum("KIND_GPU")}]
    files = [(plans[0].path, "model.plan")]
    if len(plans) > 1:
        cc_files = {ccs[0]: "model.plan"}
        for plan, cc in zip(plans[1:], ccs[1:]):
            fname = f"model.sm{cc.replace('.', '')}.plan"
            cc_files[cc] = fname
            files.append((plan.path, fname))
        message["cc_model_filenames"] = cc_files
    message["parameters"] = _parameters(first.artifact)
    extra = {
        "plans": [
            {
                "file": dst,
                "source": str(p.path),
                "compute_capability": p.manifest.device.compute_capability,
                "gpu": p.manifest.device.gpu_name,
                "tensorrt_version": p.manifest.tensorrt_version,
                "precision": p.manifest.precision,
                "profile": p.manifest.profile,
            }
            for p, (_, dst) in zip(plans, files)
        ]
    }
    return message, first.artifact, files, extra


def _trt_dtype(dtype: str) -> str:
    try:
        return TRT_DTYPES[dtype]
    except KeyError:
        raise ArtifactError(f"engine tensor type {dtype!r} has no Triton equivalent here") from None


def _parameters(info: ArtifactInfo) -> dict[str, dict[str, str]]:
    """Free-form facts for clients (read with ``get_model_config``); backends ignore them."""
    import json

    return {
        "edgevit.precision": {"string_value": info.precision},
        "edgevit.preprocess": {"string_value": json.dumps(info.preprocess.to_dict(), sort_keys=True)},
    }
