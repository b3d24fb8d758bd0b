"""Which TensorRT versions can parse an ONNX model, from onnx-tensorrt's operator tables.

``edgevit build --check`` answers this on the workstation, before the model reaches a device.
For every TensorRT a JetPack ships, the graph ``edgevit build`` would hand that version's
parser (LayerNorm decomposed below 8.6, the FP16 conversion of strongly typed FP16 builds) is
checked against onnx-tensorrt's ``docs/operators.md`` of that release: every op must be
listed as supported (Y), and the opset must be in the documented range.

The tables (``onnx_ops/onnx-ops-trt-*.txt``, each with its source commit) exist for 8.5, 8.6,
10.0, 10.1, 10.16 and 11.1. A version without its own table is checked against the newest
table not newer than it (onnx-tensorrt adds importers over time and has removed none that
edgevit uses): 10.3 and 10.13 against 10.1-GA, 11.4 against 11.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.errors import ArtifactError, EdgeVitError
from edgevit.trt.trtapi import TrtVersion

TABLE_DIR = Path(__file__).with_name("onnx_ops")

# The TensorRT of each JetPack (NVIDIA's JetPack release notes; the README's table).
JETPACK_TENSORRT: list[tuple[str, str]] = [
    ("5.1", "8.5.2"),
    ("6.0", "8.6.2"),
    ("6.1/6.2", "10.3.0"),
    ("7.0/7.1", "10.13.3"),
    ("7.2", "10.16.0"),
    ("7.2.2+", "11.4.1"),
]


@dataclass(frozen=True)
class OpSupport:
    supported: bool
    types: str
    restrictions: str


@dataclass
class OpTable:
    """One onnx-tensorrt ``docs/operators.md``, as committed under ``onnx_ops/``."""

    label: str  # "8.5", "10.1", ...
    source: str  # "onnx/onnx-tensorrt 8.5-GA fdeeaca8... docs/operators.md"
    opset_min: int
    opset_max: int
    ops: dict[str, OpSupport] = field(default_factory=dict)

    @property
    def version(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.label.split("."))


def table_labels() -> list[str]:
    labels = [p.stem.replace("onnx-ops-trt-", "") for p in TABLE_DIR.glob("onnx-ops-trt-*.txt")]
    return sorted(labels, key=lambda s: tuple(int(p) for p in s.split(".")))


def load_table(label: str) -> OpTable:
    """Read ``onnx_ops/onnx-ops-trt-<label>.txt``.

    Raises:
        ArtifactError: no such table, or it is malformed.
    """
    path = TABLE_DIR / f"onnx-ops-trt-{label}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ArtifactError(f"onnx-tensorrt operator table {path.name} is missing ({exc}); reinstall edgevit") from exc
    source, lo, hi, ops = "", 1, 0, {}
    for line in text.splitlines():
        if line.startswith("# source:"):
            source = line.split(":", 1)[1].strip()
        elif line.startswith("# doc:") and "opset" in line.lower():
            m = re.search(r"opset (\d+) to opset (\d+)", line, re.I)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
            else:
                m = re.search(r"up to opset (\d+)", line, re.I)
                if m:
                    hi = int(m.group(1))
        elif line and not line.startswith("#"):
            cols = [*line.split("\t"), "", "", ""][:4]
            ops[cols[0]] = OpSupport(cols[1].strip() == "Y", cols[2].strip(), cols[3].strip())
    if not ops or not hi:
        raise ArtifactError(f"onnx-tensorrt operator table {path.name} is malformed; reinstall edgevit")
    return OpTable(label, source, lo, hi, ops)


def table_for(version: TrtVersion) -> str:
    """The table that stands for ``version``: its own, else the newest older one."""
    labels = table_labels()
    best = ""
    for label in labels:
        if tuple(int(p) for p in label.split(".")) <= (version.major, version.minor):
            best = label
    if not best:
        raise ArtifactError(f"no onnx-tensorrt operator table covers {version} (oldest: {labels[0]})")
    return best


@dataclass
class ParseCheck:
    """Can ``version``'s ONNX parser read the graph ``edgevit build`` would give it?"""

    target: str  # "JetPack 5.1, TensorRT 8.5.2"
    version: TrtVersion
    table: str  # the table label used
    ok: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        stand_in = "" if self.table == f"{self.version.major}.{self.version.minor}" else f" (table of {self.table})"
        verdict = "parses" if self.ok else "does NOT parse"
        detail = "; ".join(self.problems if not self.ok else self.notes)
        return f"{self.target}{stand_in}: {verdict}" + (f" - {detail}" if detail else "")


def _opset(model: Any) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 0


def check_graph(model: Any, table: OpTable) -> list[str]:
    """Every reason ``table``'s parser cannot read ``model`` (an ``onnx.ModelProto``), or []."""
    problems = []
    opset = _opset(model)
    if not table.opset_min <= opset <= table.opset_max:
        problems.append(f"opset {opset} is outside {table.opset_min}..{table.opset_max}")
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    for op, n in sorted(counts.items()):
        support = table.ops.get(op)
        if support is None:
            problems.append(f"{op} (x{n}) is not in the operator table")
        elif not support.supported:
            problems.append(f"{op} (x{n}) is not supported")
    return problems


def graph_for(model: Any, version: TrtVersion, precision: str | None, is_qdq: bool) -> tuple[Any, list[str]]:
    """The graph ``edgevit build`` would parse on ``version``, and what it did to get it.

    Raises:
        InputError: ``precision`` cannot be built from this ONNX on ``version``.
    """
    from edgevit.engine.modes import choose_setup

    setup = choose_setup(precision, is_qdq, version, calib_cache=False)
    notes = []
    if setup.decompose_layernorm:
        from edgevit.engine.decompose import decompose_layernorm

        model, n = decompose_layernorm(model)
        if n:
            notes.append(f"after `edgevit build` decomposes {n} LayerNormalization")
    if setup.convert_fp16:
        from edgevit.engine.fp16 import convert_to_fp16

        model, _ = convert_to_fp16(model)
        notes.append(f"{setup.precision}: the FP16 conversion of `edgevit build` ({setup.mode})")
    return model, notes


def check_targets(
    model: Any, is_qdq: bool, precision: str | None = None, versions: list[tuple[str, str]] | None = None
) -> list[ParseCheck]:
    """Check ``model`` for every (JetPack, TensorRT) in ``versions`` (default: every JetPack)."""
    out = []
    for jetpack, text in versions if versions is not None else JETPACK_TENSORRT:
        version = TrtVersion.parse(text)
        target = f"JetPack {jetpack}, TensorRT {text}" if jetpack else f"TensorRT {text}"
        label = table_for(version)
        try:
            graph, notes = graph_for(model, version, precision, is_qdq)
        except EdgeVitError as exc:
            out.append(ParseCheck(target, version, label, False, [f"edgevit build refuses: {exc}"]))
            continue
        problems = check_graph(graph, load_table(label))
        out.append(ParseCheck(target, version, label, not problems, problems, notes))
    return out
