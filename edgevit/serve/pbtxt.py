"""Writing Triton ``config.pbtxt`` files and checking them against Triton's real schema.

The text is rendered from plain Python values (enum values are :class:`Enum` strings, maps
are ``dict`` under a field listed in ``MAP_FIELDS``), then parsed with protobuf's
``text_format`` into ``tritonclient``'s ``model_config_pb2.ModelConfig``: a misspelled field,
a wrong enum or a value of the wrong type is refused before any file is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgevit.errors import ArtifactError
from edgevit.serve.deps import model_config_pb2, require

# Fields whose value is a protobuf map: rendered as repeated { key: .. value: .. } entries.
MAP_FIELDS = {"parameters", "cc_model_filenames", "metric_tags"}


class Enum(str):
    """A protobuf enum value: rendered without quotes (``kind: KIND_GPU``)."""


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a quoted string with escapes protobuf's text format reads


def render(message: Mapping[str, Any], indent: int = 0) -> str:
    """Render a nested mapping as protobuf text format."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if value is None:
            continue
        if key in MAP_FIELDS and isinstance(value, Mapping):
            for k, v in value.items():
                entry = {"key": k, "value": v}
                lines.append(f"{pad}{key} {{\n{render(entry, indent + 1)}{pad}}}\n")
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and items and not isinstance(items[0], Mapping):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in items)} ]\n")
            continue
        for item in items:
            if isinstance(item, Mapping):
                lines.append(f"{pad}{key} {{\n{render(item, indent + 1)}{pad}}}\n")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}\n")
    return "".join(lines)


def parse_config(text: str, where: str = "config.pbtxt") -> Any:
    """Parse ``text`` into Triton's ``ModelConfig``; :class:`ArtifactError` when the schema refuses it."""
    pb2 = model_config_pb2()
    text_format = require("google.protobuf.text_format", "checking a Triton model configuration")
    config = pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ArtifactError(f"{where} does not follow Triton's model configuration schema: {exc}") from exc
    return config


def check_config(config: Any, where: str = "config.pbtxt", model_dir: Path | None = None) -> None:
    """What Triton would refuse at load time that the schema alone allows."""
    pb2 = model_config_pb2()
    problems: list[str] = []
    if not config.name:
        problems.append("no name")
    if not (config.platform or config.backend):
        problems.append("neither platform nor backend")
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size {config.max_batch_size} is negative")
    if not config.input or not config.output:
        problems.append("no inputs or no outputs")
    for tensor in [*config.input, *config.output]:
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            problems.append(f"tensor {tensor.name!r} has dims {list(tensor.dims)}")
        if tensor.data_type == pb2.TYPE_INVALID:
            problems.append(f"tensor {tensor.name!r} has no data_type")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            problems.append("dynamic_batching needs max_batch_size > 0")
        bad = [b for b in config.dynamic_batching.preferred_batch_size if not 0 < b <= config.max_batch_size]
        if bad:
            problems.append(f"preferred_batch_size {bad} outside 1..max_batch_size {config.max_batch_size}")
    for group in config.instance_group:
        if group.count < 1:
            problems.append(f"instance_group count {group.count}")
        if config.platform == "tensorrt_plan" and group.kind != pb2.ModelInstanceGroup.KIND_GPU:
            problems.append("a TensorRT plan runs only with instance_group kind KIND_GPU")
    if model_dir is not None:
        for tensor in config.output:
            if tensor.label_filename and not (model_dir / tensor.label_filename).is_file():
                problems.append(f"label file {tensor.label_filename} is missing")
    if problems:
        raise ArtifactError(f"{where} would not load in Triton: {'; '.join(problems)}")


def validated_text(message: Mapping[str, Any], where: str = "config.pbtxt") -> str:
    """Render ``message`` and return the text only if Triton's schema accepts it."""
    text = render(message)
    check_config(parse_config(text, where), where)
    return text
