"""What every artifact says about itself, and how artifacts are written safely.

Stages talk through files: checkpoint -> FP32 ONNX -> calibration table -> INT8 Q/DQ ONNX
-> engine + manifest. Each carries an :class:`ArtifactInfo` (model config, preprocessing,
class names, data source, the sha256 of what it was made from) so the next stage never
asks the user to repeat a setting. In ONNX files it lives in ``metadata_props`` under the
``edgevit.*`` keys below; every value is JSON.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
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


# -- writing outputs ---------------------------------------------------------------------
# Every file and folder edgevit writes goes through the functions below, so that three
# promises hold everywhere: a bad output path is refused before the work starts
# (check_output_path), a file appears whole or not at all (atomic_output, atomic_output_dir),
# and an OSError while writing (disk full, read-only, permissions) becomes one ArtifactError
# line naming the path and the cause (output_error), never a traceback.

_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "choose a writable location",
    errno.EACCES: "choose a writable location",
    errno.EPERM: "choose a writable location",
    errno.ENAMETOOLONG: "choose a shorter name",
}


def output_error(path: str | Path, exc: OSError, what: str = "") -> ArtifactError:
    """The one-line :class:`ArtifactError` for an OSError raised while writing ``path``.

    Names the path and the cause (``strerror``) and, for the usual causes, what to do:
    ``cannot write the INT8 model runs/x/model.int8.onnx: No space left on device; free
    some space or write elsewhere``. Raise it ``from exc``. For writers that cannot use
    :func:`atomic_output` (a video file growing frame by frame, a socket).
    """
    cause = exc.strerror or first_line(exc)
    other = exc.filename
    if other is not None and not Path(str(other)).name.startswith("." + Path(path).name + "."):
        cause += f" ({other})"  # about another file than our temporary one: say which
    hint = _HINTS.get(exc.errno or 0)
    return ArtifactError(f"{_cannot_write(path, what)}: {cause}" + (f"; {hint}" if hint else ""))


def _cannot_write(path: Path | str, what: str) -> str:
    return f"cannot write the {what} {path}" if what else f"cannot write {path}"


def check_output_path(path: str | Path, kind: str = "file", what: str = "") -> Path:
    """Refuse, before any work starts, an output path that cannot be written; return it as a Path.

    Commands call this on every output whose path they know up front (``-o FILE``, ``--out
    DIR``, a calibration folder), so a long job never fails at its last step on a typo;
    :func:`atomic_output` calls it again at writing time. Nothing is created here.

    Args:
        path: the file or folder that will be written.
        kind: ``"file"``: ``path`` must not be a folder or a special file (``/dev/null``);
            ``"dir"``: ``path`` must not be a file. Either way its nearest existing
            ancestor must be a folder this process may write into.
        what: what goes there, for the message (``"INT8 model"``, ``"report folder"``).

    Raises:
        ArtifactError: one line naming the path and what to do.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
    path = Path(path)
    where = _cannot_write(path, what)
    if kind == "file":
        if path.is_dir():
            raise ArtifactError(f"{where}: it is a folder, not a file; name a file")
        if path.exists() and not path.is_file():
            raise ArtifactError(f"{where}: it exists and is not a regular file; name a file")
    elif path.exists() and not path.is_dir():
        raise ArtifactError(f"{where}: it is a file, not a folder; name a folder")
    # the nearest existing ancestor decides whether the rest can be created
    ancestor = path if kind == "dir" and path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():
            raise ArtifactError(f"{where}: {ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ArtifactError(f"{where}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ArtifactError(f"{where}: {ancestor} is not writable (permissions or a read-only file system)")
    return path


def _shared_mode(path: Path, directory: bool = False) -> None:
    # mkstemp/mkdtemp make 0600/0700 entries; artifacts are meant to be shared (a service
    # account on the device reads the engine), so give them the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_output(path: str | Path, what: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only on success.

    A crash, an exception, Ctrl-C or SIGTERM (the CLI turns it into an exception too)
    leaves ``path`` as it was (absent or the old file), never half written, and removes
    the temporary file. The file is flushed to the disk (fsync) before the rename, so a
    power cut on the device does not leave an empty artifact either.

    Errors: the path is checked first (:func:`check_output_path`); an OSError raised
    while writing (by the ``with`` body or the rename: disk full, read-only, ...) becomes
    the one-line :class:`ArtifactError` of :func:`output_error`; other exceptions pass
    through unchanged.

    Args:
        path: the file to write.
        what: what it is, for error messages (``"ONNX model"``, ``"calibration table"``);
            empty: the path alone.
    """
    path = check_output_path(path, "file", what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise output_error(path, exc, what) from exc
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            if tmp.is_file():
                _shared_mode(tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise output_error(path, exc, what) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_output_dir(
    path: str | Path, what: str = "output folder", replaceable: Callable[[str], bool] | None = None
) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``path``; on success it replaces ``path`` whole.

    For jobs whose outputs must agree with each other (a pipeline run: checkpoint, ONNX
    models, calibration table, report, summary): readers only ever see the previous
    complete folder or the new complete one, never a mix of two runs. An error,
    Ctrl-C or SIGTERM removes the temporary folder and leaves ``path`` untouched. The swap
    is two renames (old folder aside, new one in, old one deleted); a failure between them
    puts the old folder back.

    An existing ``path`` is replaced only if every entry in it is ``replaceable`` (by
    name; hidden ``*.tmp`` leftovers always are), so the user's own files are never
    deleted: otherwise this refuses before yielding, i.e. before the work starts.
    Errors: those of :func:`check_output_path` before the work, and an OSError while
    creating or swapping the folders as the one-line :class:`ArtifactError` of
    :func:`output_error`; the job's own errors pass through unchanged (its files are
    written with :func:`atomic_output`, which converts their OSErrors).

    Args:
        path: the folder to (re)place.
        what: what it is, for error messages.
        replaceable: which entry names of an existing ``path`` may be replaced; None: an
            existing non-empty ``path`` is refused.
    """
    path = check_output_path(path, "dir", what)
    if path.exists():
        if path.resolve() in (Path.cwd(), *Path.cwd().parents):
            raise ArtifactError(f"cannot replace the {what} {path}: it is the current folder or holds it; name another")
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            raise output_error(path, exc, what) from exc
        foreign = [
            n for n in names if not (n.startswith(".") and n.endswith(".tmp")) and not (replaceable and replaceable(n))
        ]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ArtifactError(
                f"cannot replace the {what} {path}: it holds files this command did not write ({shown}); "
                "name a new folder or move them"
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    except OSError as exc:
        raise output_error(path, exc, what) from exc
    try:
        yield tmp  # the job: its own errors pass through as they are
        try:
            _shared_mode(tmp, directory=True)
            if not path.exists():
                os.rename(tmp, path)
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.rename(path, old)  # a folder may be renamed onto an empty one
                try:
                    os.rename(tmp, path)
                except BaseException:
                    os.rename(old, path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise output_error(path, exc, what) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: str | Path, data: bytes, what: str = "") -> None:
    with atomic_output(path, what) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str, what: str = "") -> None:
    with atomic_output(path, what) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any, what: str = "") -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", what)


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
