"""The JSON manifest written next to every engine, and the checks made before running one.

A TensorRT engine runs only on the TensorRT version and GPU (compute capability) it was built
with. The manifest records both, plus everything the runtime needs to rebuild a
:class:`~edgevit.runtime.base.Model` without the ONNX (preprocessing, class names: the
source's ``ArtifactInfo``), the build settings and a ready-to-paste rebuild command.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgevit.artifacts import ArtifactInfo, read_json, sha256_file, write_json_atomic
from edgevit.errors import ArtifactError
from edgevit.trt.device import DeviceInfo

MANIFEST_FORMAT = "edgevit-engine/1"


def manifest_path(engine_path: str | Path) -> Path:
    """``model.int8.engine`` -> ``model.int8.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


@dataclass
class TensorSpec:
    name: str
    mode: str  # "input" / "output"
    shape: list[int]  # -1 for the dynamic batch
    dtype: str  # "float32", ...


@dataclass
class Manifest:
    """Everything known about one engine."""

    engine_file: str
    engine_sha256: str
    engine_bytes: int
    tensorrt_version: str
    tensorrt_module: str  # "tensorrt" or "tensorrt_rtx"
    device: DeviceInfo
    precision: str  # fp32 / fp16 / int8 / best
    build_mode: str  # strongly-typed / builder-flags / implicit-int8
    profile: dict[str, list[int]]  # min / opt / max input shapes
    io: list[TensorSpec]
    source_onnx: str
    source_sha256: str
    artifact: ArtifactInfo
    built_from: str = ""  # the ONNX actually parsed (the source, or its FP16 / LayerNorm-decomposed form)
    calib_cache: str = (
        ""  # implicit INT8: the cache given; the one TensorRT read (its header retagged) is beside the engine
    )
    dla_core: int | None = None
    build_seconds: float = 0.0
    built_at: str = ""  # UTC ISO 8601
    settings: dict[str, Any] = field(default_factory=dict)  # workspace, opt level, timing cache, ...
    layer_precisions: dict[str, Any] = field(default_factory=dict)
    precision_check: str = ""
    fp16_conversion: dict[str, Any] = field(default_factory=dict)
    rebuild_command: str = ""
    trtexec_command: str = ""  # the same build with trtexec, on files that exist beside the engine
    dla: dict[str, Any] = field(default_factory=dict)  # what runs on DLA (network layers, builder log, inspector)
    edgevit_version: str = ""

    @property
    def max_batch(self) -> int:
        return int(self.profile["max"][0])

    @property
    def input_spec(self) -> TensorSpec:
        return next(t for t in self.io if t.mode == "input")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["device"] = self.device.to_dict()
        d["artifact"] = self.artifact.to_json_dict()
        return {"format": MANIFEST_FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> Manifest:
        if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(f"{where} is not an edgevit engine manifest ({MANIFEST_FORMAT}); rebuild the engine")
        try:
            values = {k: v for k, v in d.items() if k != "format"}
            values["device"] = DeviceInfo.from_dict(values["device"])
            values["artifact"] = ArtifactInfo.from_json_dict(values["artifact"], where=where)
            values["io"] = [TensorSpec(**t) for t in values["io"]]
            return cls(**values)
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where} is malformed ({exc}); rebuild the engine with `edgevit build`") from exc

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())


def load_manifest(engine_path: str | Path) -> Manifest:
    """Read the manifest beside ``engine_path`` and check the engine file is the one it describes."""
    engine_path = Path(engine_path)
    mpath = manifest_path(engine_path)
    if not engine_path.is_file():
        raise ArtifactError(f"engine {engine_path} does not exist")
    if not mpath.is_file():
        raise ArtifactError(
            f"engine {engine_path} has no manifest {mpath.name} beside it; "
            "rebuild it with `edgevit build <model.onnx>` "
            "(engines made by trtexec carry no preprocessing or class names)"
        )
    manifest = Manifest.from_dict(read_json(mpath, "engine manifest"), where=str(mpath))
    size = engine_path.stat().st_size
    if size != manifest.engine_bytes:
        raise ArtifactError(
            f"engine {engine_path} is {size} bytes but its manifest says {manifest.engine_bytes}: "
            "the engine file is truncated "
            f"or was replaced; rebuild it: {manifest.rebuild_command or 'edgevit build <model.onnx>'}"
        )
    if sha256_file(engine_path) != manifest.engine_sha256:
        raise ArtifactError(
            f"engine {engine_path} does not match its manifest (sha256 differs): corrupt or replaced; rebuild it: "
            f"{manifest.rebuild_command or 'edgevit build <model.onnx>'}"
        )
    return manifest


def check_compatible(manifest: Manifest, trt_version: str, device: DeviceInfo, engine_path: str | Path) -> None:
    """Refuse an engine built for another TensorRT version or GPU, saying how to rebuild."""
    how = manifest.rebuild_command or f"edgevit build {manifest.source_onnx} --precision {manifest.precision}"
    if manifest.tensorrt_module != "tensorrt":
        raise ArtifactError(
            f"{engine_path} was built by {manifest.tensorrt_module} {manifest.tensorrt_version} (a parse/build check, "
            f"not a device engine); build it on this device: {how}"
        )
    if _norm_version(manifest.tensorrt_version) != _norm_version(trt_version):
        raise ArtifactError(
            f"{engine_path} was built with TensorRT {manifest.tensorrt_version} but this is TensorRT {trt_version}; "
            f"engines are not portable across versions: rebuild on this device: {how}"
        )
    if manifest.device.compute_capability != device.compute_capability:
        raise ArtifactError(
            f"{engine_path} was built for {manifest.device.describe()} but this GPU is {device.describe()} "
            f"(compute capability differs); rebuild on this device: {how}"
        )
    if manifest.device.gpu_name != device.gpu_name:
        raise ArtifactError(
            f"{engine_path} was built on a {manifest.device.gpu_name} but this GPU is a {device.gpu_name}; "
            f"rebuild on this device: {how}"
        )


def _norm_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)
