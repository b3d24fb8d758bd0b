"""The package's shape: imports between parts run one way (from the CLI down through the
stages to the artifacts), and the device side runs on Python 3.8 (JetPack 5).

Every ``import`` counts, also those inside functions: a lazy import upward is still a
dependency upward.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgevit"

# Highest layer first. A module may import its own part (a package or a top-level module)
# and any part of a lower layer; never a part of its own layer or of a higher one.
LAYERS: list[tuple[str, ...]] = [
    ("__main__",),
    ("cli",),
    ("pipeline", "bench", "serve"),
    ("stream", "engine", "inspect_layers", "importer"),
    ("quant", "export", "validate"),
    ("train", "runtime"),
    ("model", "weights", "data", "trt"),
    ("artifacts", "options"),
    ("preprocess", "config", "metrics", "sysinfo"),
    ("resample",),
    ("errors",),
]
# imported from everywhere, import nothing of edgevit's but errors: the package's root
ROOT = "__init__"


def _part(module: str) -> str:
    """``edgevit.quant.table`` -> ``quant``; ``edgevit`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _rank(part: str) -> int:
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"edgevit.{part} is in no layer of tests/test_layers.py; add it to LAYERS")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        out.append((name.removesuffix(".__init__"), path))
    return out


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
    return [(t, line) for t, line in found if t == "edgevit" or t.startswith("edgevit.")]


def test_every_part_has_a_layer():
    for module, _ in _modules():
        part = _part(module)
        if part != ROOT:
            _rank(part)


def test_imports_run_downward():
    wrong = []
    for module, path in _modules():
        here = _part(module)
        for target, line in _imports(module, path):
            there = _part(target)
            if there == ROOT and target == "edgevit":
                continue  # `from edgevit import errors, __version__`: the root holds only those
            if there == here:
                continue
            if here == ROOT:
                if there != "errors":
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: the package root imports {target}")
                continue
            if _rank(there) <= _rank(here):
                wrong.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {target} "
                    f"({there!r} is not below {here!r})"
                )
    assert not wrong, "imports that run sideways or upward:\n" + "\n".join(wrong)


def test_package_inits_are_light():
    """Package ``__init__`` modules import nothing heavy at import time (no onnx,
    onnxruntime, torch, tensorrt, cv2), so importing a stage costs only what it uses."""
    heavy = {"onnx", "onnxruntime", "torch", "tensorrt", "tensorrt_rtx", "cv2", "openvino"}
    wrong = []
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            wrong += [f"{init.relative_to(PACKAGE.parent)} imports {n}" for n in names if n.split(".")[0] in heavy]
    assert not wrong, wrong


# Python 3.9+ APIs that vermin cannot see (it does not know the type of the object).
NEWER_METHODS = re.compile(r"\.(removesuffix|removeprefix|is_relative_to|with_stem|bit_count)\(")


@pytest.mark.skipif(
    shutil.which("vermin") is None and not Path(sys.executable).with_name("vermin").exists(),
    reason="vermin is not installed (pip install -e '.[test]')",
)
def test_package_runs_on_python_3_8():
    """JetPack 5 ships Python 3.8 and TensorRT bindings built for it: the whole package must
    run there (no Python 3.8 interpreter exists on these machines, so check statically)."""
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    proc = subprocess.run(
        [vermin, "-t=3.8-", "--violations", "--no-tips", "--no-parse-comments", str(PACKAGE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    newer = [
        f"{p.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
        for p in PACKAGE.rglob("*.py")
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if NEWER_METHODS.search(line)
    ]
    assert not newer, "Python 3.9+ methods:\n" + "\n".join(newer)
