"""API conformance: every TensorRT name edgevit uses exists in every TensorRT it claims
(8.5, 8.6, 10.3, 10.13, 10.16, 11.0, 11.1), unless a version gate keeps it away.

The names each release's Python bindings define were extracted once from NVIDIA's pybind11
sources and package ``__init__.py`` at each release branch (tests/trt/fixtures/bindings-trt-*.txt,
each naming its ref and commit). Three checks use them:

* statically, every ``trt.X.Y`` and every member edgevit reads on a TensorRT object
  (``config.set_flag``, ``layer.precision``, ...) is looked up per version; a name missing
  somewhere must be listed in :data:`GATES` with the ``TrtVersion`` property that keeps it
  away, and that property must be false exactly where the name is missing;
* the gates of :class:`~edgevit.trt.trtapi.TrtVersion` agree with the names they gate;
* the test doubles (tests/trt_doubles.py) are built from the same lists: ``edgevit build``
  and the runtime run against them in tests/engine and tests/runtime, where a call the real
  binding lacks raises AttributeError.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from trt_doubles import FIXTURES, VERSIONS, binding_names, make_trt, members

from edgevit.trt.trtapi import TrtVersion

PACKAGE = Path(__file__).resolve().parents[2] / "edgevit"
SOURCES = [*sorted((PACKAGE / "trt").glob("*.py")), *sorted((PACKAGE / "engine").glob("*.py"))]
SOURCES.append(PACKAGE / "runtime" / "trt_backend.py")
# The modules that hold TensorRT objects in the variables below.
OBJECT_SOURCES = ("network.py", "build.py", "trtapi.py", "calibrator.py", "trt_backend.py")
LABELS = list(VERSIONS)

# Which binding class a variable holds where edgevit talks to TensorRT.
VARIABLES = {
    "config": "IBuilderConfig",
    "builder": "Builder",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "profile": "IOptimizationProfile",
    "layer": "ILayer",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "inspector": "EngineInspector",
    "runtime": "Runtime",
    "e": "ParserError",
}
# Names not in every version, and the TrtVersion property that is true exactly where edgevit
# uses them ("hasattr": the code asks the object itself). A gate is also true wherever the
# name exists (a capability edgevit would otherwise leave unused), except in NEEDS_ONLY.
GATES = {
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED": "has_strongly_typed",
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": "needs_explicit_batch_flag",
    "BuilderFlag.FP16": "has_builder_precision_flags",
    "BuilderFlag.INT8": "has_builder_precision_flags",
    "BuilderFlag.PREFER_PRECISION_CONSTRAINTS": "has_builder_precision_flags",
    "ILayer.precision": "has_builder_precision_flags",
    "ILayer.set_output_type": "has_builder_precision_flags",
    "IInt8EntropyCalibrator2": "has_implicit_int8",
    "IBuilderConfig.int8_calibrator": "has_implicit_int8",
    "IBuilderConfig.set_calibration_profile": "has_implicit_int8",
    "IBuilderConfig.builder_optimization_level": "has_opt_level",
    "ParserError.node_name": "hasattr",
    "ParserError.node_operator": "hasattr",
}
# EXPLICIT_BATCH still exists in 10.x but is ignored there ("networks are always explicit batch").
NEEDS_ONLY = {"NetworkDefinitionCreationFlag.EXPLICIT_BATCH"}
# Names reached dynamically: getattr(trt.BuilderFlag, flag) for BuildSetup.builder_flags.
DYNAMIC = {"BuilderFlag.FP16", "BuilderFlag.INT8"}


@pytest.fixture(scope="module")
def names() -> dict[str, set[str]]:
    return {label: binding_names(label) for label in LABELS}


def _version(label: str) -> TrtVersion:
    return TrtVersion.parse(VERSIONS[label])


def used_names() -> dict[str, set[str]]:
    """Qualified binding names edgevit's TensorRT code uses -> the files using them."""
    found: dict[str, set[str]] = {name: {"dynamic"} for name in DYNAMIC}
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            name = ""
            base = node.value
            if isinstance(base, ast.Name) and base.id == "trt" and (node.attr[0].isupper() or node.attr == "nptype"):
                name = node.attr  # trt.Builder
            elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "trt":
                if base.attr[0].isupper() and not node.attr.startswith("_"):
                    name = f"{base.attr}.{node.attr}"  # trt.BuilderFlag.INT8
            elif path.name in OBJECT_SOURCES:
                var = ""
                if isinstance(base, ast.Name):
                    var = base.id  # config.set_flag
                elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "self":
                    var = base.attr  # self.engine.num_io_tensors
                if var in VARIABLES and not (path.name == "trt_backend.py" and var == "e"):
                    name = f"{VARIABLES[var]}.{node.attr}"
            if name:
                found.setdefault(name, set()).add(path.name)
    return found


def _exists(name: str, label_names: set[str]) -> bool:
    if "." not in name:
        return name in label_names
    cls, attr = name.split(".", 1)
    return attr in members(label_names, cls)


def test_fixtures_name_their_source(names: dict[str, set[str]]) -> None:
    for label in LABELS:
        head = (FIXTURES / f"bindings-trt-{label}.txt").read_text(encoding="utf-8").splitlines()[0]
        assert re.match(r"# source: NVIDIA/TensorRT release/\S+ [0-9a-f]{40} python/src/", head), head
        assert len(names[label]) > 1000


def test_the_scan_sees_what_the_build_and_runtime_use() -> None:
    used = used_names()
    for name in (
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
        "IBuilderConfig.set_timing_cache",
        "ILayer.precision",
        "ICudaEngine.get_tensor_profile_shape",
        "IExecutionContext.execute_async_v3",
        "EngineInspector.get_engine_information",
        "OnnxParser.parse_from_file",
    ):
        assert name in used, name


@pytest.mark.parametrize("label", LABELS)
def test_every_used_name_exists_or_is_gated(label: str, names: dict[str, set[str]]) -> None:
    """The static check: a missing name must be gated, and its gate must be off in this version."""
    version = _version(label)
    wrong = []
    for name, files in sorted(used_names().items()):
        if _exists(name, names[label]):
            continue
        gate = GATES.get(name)
        if gate is None:
            wrong.append(f"{name} ({', '.join(sorted(files))}): missing in TensorRT {version.text}, and not gated")
        elif gate != "hasattr" and getattr(version, gate):
            wrong.append(f"{name}: missing in TensorRT {version.text}, but TrtVersion.{gate} is true there")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(GATES))
def test_gates_open_exactly_where_the_name_exists(name: str, names: dict[str, set[str]]) -> None:
    """A gate that is off where the name exists would needlessly refuse a working TensorRT."""
    gate = GATES[name]
    present = [label for label in LABELS if _exists(name, names[label])]
    assert present, f"{name} exists in no TensorRT version: drop it"
    if gate == "hasattr":
        return
    for label in LABELS:
        on = getattr(_version(label), gate)
        if name in NEEDS_ONLY:
            assert not on or label in present, (name, label)
        else:
            assert on == (label in present), (name, label)


def test_version_gates_match_the_bindings(names: dict[str, set[str]]) -> None:
    for label in LABELS:
        v, n = _version(label), names[label]
        assert v.has_opt_level == _exists("IBuilderConfig.builder_optimization_level", n)
        assert v.parses_layernorm == _exists("LayerType.NORMALIZATION", n)  # INormalizationLayer: 8.6+
        assert v.has_implicit_int8 == _exists("IBuilderConfig.int8_calibrator", n) == ("IInt8EntropyCalibrator2" in n)
        assert v.has_builder_precision_flags == _exists("BuilderFlag.FP16", n) == _exists("ILayer.precision", n)
        assert v.has_strongly_typed == _exists("NetworkDefinitionCreationFlag.STRONGLY_TYPED", n)
        # DLA calls exist everywhere: the refusal on 11.0-11.4.0 is NVIDIA's support statement, not the API
        assert _exists("IBuilderConfig.can_run_on_DLA", n) and _exists("DeviceType.DLA", n)


@pytest.mark.parametrize("label", LABELS)
def test_the_double_is_as_strict_as_the_binding(label: str, names: dict[str, set[str]]) -> None:
    trt, fake = make_trt(label)
    assert trt.__version__ == VERSIONS[label]
    with pytest.raises(AttributeError, match=f"TensorRT {VERSIONS[label]}"):
        trt.NoSuchThing  # noqa: B018
    flags = trt.BuilderFlag
    if "BuilderFlag.INT8" in names[label]:
        assert flags.INT8.name == "INT8"
    else:
        with pytest.raises(AttributeError, match=r"no BuilderFlag\.INT8"):
            flags.INT8  # noqa: B018
    config = trt.Builder(object()).create_builder_config()
    if _exists("IBuilderConfig.builder_optimization_level", names[label]):
        config.builder_optimization_level = 4
    else:
        assert not hasattr(config, "builder_optimization_level")
        with pytest.raises(AttributeError):
            config.builder_optimization_level = 4
    assert fake.api.touched and all(_exists(t, names[label]) for t in fake.api.touched)
