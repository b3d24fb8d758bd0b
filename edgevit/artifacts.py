"""What every artifact says about itself, and how artifacts are written safely.

Stages talk through files: checkpoint -> FP32 ONNX -> calibration table -> INT8 Q/DQ ONNX
-> engine + manifest. Each carries an :class:`ArtifactInfo` (model config, preprocessing,
class names, data source, the sha256 of what it was made from) so the next stage never
asks the user to repeat a setting. In ONNX files it lives in ``metadata_props`` under the
``edgevit.*`` keys below; every value is JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.config import ViTConfig
from edgevit.errors import ArtifactError, first_line
from edgevit.preprocess import Preprocess

# 1: every artifact has a model config. 2: model_config may be null (an ONNX classifier
# imported from elsewhere, whose architecture edgevit does not know); written only then, so
# an older edgevit says "upgrade" instead of failing on the missing config.
FORMAT_VERSION = 2
META_PREFIX = "edgevit."


@dataclass
class ArtifactInfo:
    """Self-description carried by every edgevit artifact.

    Args:
        model_config: the ViT's architecture; None for an imported ONNX classifier whose
            architecture is unknown (its input size and channels are in ``preprocess``,
            its classes in ``class_names``).
        preprocess: how raw images become the model input.
        class_names: one name per output logit.
        precision: ``fp32``, ``int8`` (Q/DQ) or an engine precision.
        source_sha256: sha256 of the artifact this one was made from.
        data: where the training images came from (``digits`` or a folder path), so
            calibration and validation can find images without being told.
        extra: stage-specific facts (calibration method, export check, ...).
    """

    model_config: ViTConfig | None
    preprocess: Preprocess
    class_names: list[str]
    precision: str = "fp32"
    source_sha256: str = ""
    data: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        values: dict[str, Any] = {
            "format_version": 1 if self.model_config is not None else FORMAT_VERSION,
            "model_config": self.model_config.to_dict() if self.model_config is not None else None,
            "preprocess": self.preprocess.to_dict(),
            "class_names": list(self.class_names),
            "precision": self.precision,
            "source_sha256": self.source_sha256,
            "data": self.data,
            "extra": self.extra,
        }
        return {META_PREFIX + k: json.dumps(v, sort_keys=True) for k, v in values.items()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], where: str = "artifact") -> ArtifactInfo:
        if META_PREFIX + "model_config" not in meta:
            raise ArtifactError(
                f"{where} has no edgevit metadata; it was not made by edgevit: "
                f"`edgevit import {where} -o model.onnx` makes an artifact of it (or re-export it)"
            )
        try:
            values = {k[len(META_PREFIX) :]: json.loads(v) for k, v in meta.items() if k.startswith(META_PREFIX)}
            version = int(values.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise ArtifactError(f"{where} uses metadata format {version}; upgrade edgevit to read it")
            return cls(
                model_config=(
                    ViTConfig.from_dict(values["model_config"]) if values["model_config"] is not None else None
                ),
                preprocess=Preprocess.from_dict(values["preprocess"]),
                class_names=[str(c) for c in values["class_names"]],
                precision=str(values.get("precision", "fp32")),
                source_sha256=str(values.get("source_sha256", "")),
                data=str(values.get("data", "")),
                extra=dict(values.get("extra") or {}),
            )
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where} has malformed edgevit metadata ({exc}); re-export it") from exc

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """C x H x W of the model input (from the preprocessing: known for every artifact)."""
        return self.preprocess.input_shape

    def shape_name(self) -> str:
        """A short name of the model's shape for reports: ``vit8px-d4-w64`` or, without a
        config, ``onnx8px-10cls``."""
        c = self.model_config
        if c is None:
            return f"onnx{self.preprocess.size}px-{len(self.class_names)}cls"
        return f"vit{c.img_size}px-d{c.depth}-w{c.embed_dim}"

    def to_json_dict(self) -> dict[str, Any]:
        return {k[len(META_PREFIX) :]: json.loads(v) for k, v in self.to_metadata().items()}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], where: str = "artifact") -> ArtifactInfo:
        return cls.from_metadata({META_PREFIX + k: json.dumps(v) for k, v in data.items()}, where)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only on success.

    A crash, an exception or Ctrl-C leaves ``path`` as it was (absent or the old file),
    never half written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp makes 0600 files; artifacts are meant to be shared (a service account on
            # the device reads the engine), so give them the usual umask-based mode.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{what} {path} is not valid JSON ({exc}); it is corrupt, recreate it") from exc


def read_onnx_info(path: str | Path) -> ArtifactInfo:
    """Read the edgevit metadata of an ONNX file with ONNX Runtime (no onnx package needed)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX model {path} does not exist")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # metadata only: skip optimizing
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for corrupt models
        raise ArtifactError(f"{path} is not a readable ONNX model ({first_line(exc)}); re-export it") from exc
    return ArtifactInfo.from_metadata(sess.get_modelmeta().custom_metadata_map, where=str(path))


def set_onnx_metadata(proto: Any, info: ArtifactInfo) -> None:
    """Replace an ``onnx.ModelProto``'s ``metadata_props`` with ``info``: the one way an
    edgevit ONNX artifact gets its self-description."""
    del proto.metadata_props[:]
    for key, value in info.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
