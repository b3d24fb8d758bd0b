"""``edgevit build`` end to end against each TensorRT release's Python API, without a GPU.

The TensorRT module is the double of tests/trt_doubles.py, built from the names NVIDIA's
bindings define at 8.5, 8.6, 10.3, 10.13, 10.16, 11.0 and 11.1: any call the real binding of
that release lacks raises AttributeError here too. Its parser refuses the ops onnx-tensorrt's
table of the release marks unsupported, and its builder reads a calibration cache only under
the header NVIDIA's headers define for the release. What runs here: the mode choice, the
LayerNorm decomposition (8.5), FP32 pins (builder flags), the calibration cache header,
DLA placement and refusals, and that the trtexec line names the files the build wrote.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import trt_doubles
from trt_doubles import VERSIONS, make_trt, version_number

from edgevit.engine import build as build_mod
from edgevit.engine import trtexec as trtexec_mod
from edgevit.engine.build import build_engine
from edgevit.engine.options import BuildOptions
from edgevit.errors import ArtifactError, BackendError, InputError
from edgevit.quant.table import read_trt_cache
from edgevit.trt import device as device_mod
from edgevit.trt.device import DeviceInfo, JetsonInfo
from edgevit.trt.manifest import load_manifest
from edgevit.trt.trtapi import TrtVersion

AGX_ORIN = DeviceInfo("Orin", "8.7", JetsonInfo("NVIDIA Jetson AGX Orin Developer Kit", "36.4.3", "6.2"), "12.6")
LABELS = list(VERSIONS)


@pytest.fixture
def use_trt(monkeypatch: pytest.MonkeyPatch):
    """Make ``label``'s double the TensorRT edgevit imports, on an AGX Orin."""

    def use(label: str, device: DeviceInfo = AGX_ORIN):
        module, fake = make_trt(label)
        version = TrtVersion.parse(VERSIONS[label])
        importer = lambda **kw: (module, version)  # noqa: E731
        monkeypatch.setattr(build_mod, "import_tensorrt", importer)
        monkeypatch.setattr(trtexec_mod, "import_tensorrt", importer)
        monkeypatch.setattr(build_mod, "detect_device", lambda *a, **k: device)
        monkeypatch.setattr(device_mod, "detect_device", lambda *a, **k: device)
        return fake

    return use


def _opts(variants: SimpleNamespace, tmp_path: Path, source: str, precision: str, **kw: object) -> BuildOptions:
    src = variants.fp32_onnx if source == "fp32" else variants.int8_onnx
    if kw.pop("cache", False):
        kw["calib_cache"] = variants.trt_cache
    return BuildOptions(onnx=src, precision=precision, engines_dir=tmp_path / "engines", **kw)


CASES = [("fp32", "fp16", False), ("int8", "best", False), ("int8", "int8", False), ("fp32", "int8", True)]


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize(("source", "precision", "cache"), CASES)
def test_build_on_every_release(use_trt, nano_variants, tmp_path: Path, label, source, precision, cache) -> None:
    fake = use_trt(label)
    version = TrtVersion.parse(VERSIONS[label])
    opts = _opts(nano_variants, tmp_path, source, precision, cache=cache)
    if cache and not version.has_implicit_int8:
        with pytest.raises(InputError, match="no implicit INT8"):
            build_engine(opts)
        return
    result = build_engine(opts)
    m = load_manifest(result.engine)
    want = "implicit-int8" if cache else ("strongly-typed" if version.prefers_strongly_typed else "builder-flags")
    assert m.build_mode == want and m.tensorrt_version == VERSIONS[label]
    assert m.precision_check.startswith("inspector:")
    built_from = Path(m.built_from)
    assert built_from.is_file()
    if not version.parses_layernorm:
        assert built_from.name.endswith(".ln-decomposed.onnx") and m.settings["layernorm_decomposed"] == 9
    # the trtexec line is true: every file it names exists after the build
    line = m.trtexec_command
    assert f"--onnx={built_from}" in line and f"--saveEngine={result.engine}" in line
    if cache:
        calib = Path(m.settings["calib_cache_used"])
        assert f"--calib={calib}" in line and calib.is_file()
        assert read_trt_cache(calib)[0] == f"TRT-{version_number(VERSIONS[label])}-EntropyCalibration2"
    assert fake.api.touched  # the build went through the double


def test_8_5_needs_the_decomposition(use_trt, nano_variants, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without it (today's code: parses_layernorm everywhere) TensorRT 8.5's parser refuses LayerNormalization."""
    use_trt("8.5")
    monkeypatch.setattr(TrtVersion, "parses_layernorm", property(lambda self: True))
    with pytest.raises(ArtifactError, match=r"No importer registered for op: LayerNormalization"):
        build_engine(_opts(nano_variants, tmp_path, "fp32", "fp16"))
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").glob("*.engine"))


@pytest.mark.parametrize("label", ["10.3", "10.13", "10.16"])
def test_a_cache_with_the_8x_numbering_is_rejected_on_10x(use_trt, nano_variants, tmp_path, monkeypatch, label) -> None:
    """TensorRT 10 numbers its version MAJOR*10000+MINOR*100+PATCH: a TRT-10300 header is another version's."""
    use_trt(label)
    monkeypatch.setattr(
        TrtVersion,
        "calib_tag",
        property(lambda v: f"TRT-{v.major * 1000 + v.minor * 100 + v.patch}-EntropyCalibration2"),
    )
    with pytest.raises(BackendError, match="rejected the calibration cache"):
        build_engine(_opts(nano_variants, tmp_path, "fp32", "int8", cache=True))


@pytest.mark.parametrize("label", ["8.5", "8.6", "10.3", "10.13", "10.16"])
def test_builder_flags_keep_layernorm_and_softmax_fp32(use_trt, nano_variants, tmp_path, label) -> None:
    fake = use_trt(label)
    result = build_engine(_opts(nano_variants, tmp_path, "int8", "best", mode="builder-flags"))
    build = fake.builds[-1]
    assert "PREFER_PRECISION_CONSTRAINTS" in build["flags"] and {"INT8", "FP16"} <= set(build["flags"])
    layers = build["network"]._layers
    pinned = [lay for lay in layers if lay.precision is not None]
    assert pinned and all(lay.precision.name == "FLOAT" for lay in pinned)
    assert all(t.name == "FLOAT" for lay in pinned for t in lay.output_types.values())
    want = (
        {"LayerNormalization", "Softmax"}
        if label != "8.5"
        else {"ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div", "Mul", "Softmax"}
    )
    assert {lay.op for lay in pinned} == want
    assert not any(lay.op in ("MatMul", "Conv", "Gelu", "Erf") for lay in pinned)
    assert result.manifest.settings["fp32_layers"] == len(pinned)
    line = result.manifest.trtexec_command
    assert "--precisionConstraints=prefer" in line and f"{pinned[0].name}:fp32" in line


@pytest.mark.parametrize("label", ["10.13", "11.1"])
def test_strongly_typed_builds_pin_nothing(use_trt, nano_variants, tmp_path, label) -> None:
    fake = use_trt(label)
    build_engine(_opts(nano_variants, tmp_path, "int8", "best"))
    assert not fake.builds[-1]["flags"] and fake.builds[-1]["strongly_typed"]
    assert all(lay.precision is None for lay in fake.builds[-1]["network"]._layers)


def test_dla_reports_what_runs_on_it(use_trt, nano_variants, tmp_path) -> None:
    fake = use_trt("10.3")
    result = build_engine(_opts(nano_variants, tmp_path, "int8", "int8", dla_core=0, batch_profile=(4, 4, 4)))
    dla = result.manifest.dla
    assert dla["dla_capable_layers"] == 1 and dla["network_layers"] > 100  # the patch embedding's Conv
    assert dla["dla_subgraphs"] == 1 and dla["dla_regions"] == 1
    assert {"NORMALIZATION", "SOFTMAX", "MATRIX_MULTIPLY"} <= set(dla["gpu_layer_types"])
    config = fake.builds[-1]["config"]
    assert config.default_device_type.name == "DLA" and config.DLA_core == 0 and "GPU_FALLBACK" in config.flags
    assert result.engine.name.endswith(".int8.dla0.engine")
    assert "--useDLACore=0" in result.manifest.trtexec_command


def test_dla_build_with_nothing_on_dla_is_refused(use_trt, nano_variants, tmp_path, monkeypatch) -> None:
    use_trt("10.3")
    monkeypatch.setattr(trt_doubles, "DLA_TYPES", set())
    with pytest.raises(BackendError, match="no layer of this model runs on the DLA"):
        build_engine(_opts(nano_variants, tmp_path, "int8", "int8", dla_core=0, batch_profile=(4, 4, 4)))
    assert not any((tmp_path / "engines").glob("*.engine"))


@pytest.mark.parametrize(("label", "ok"), [("10.3", True), ("11.0", False), ("11.1", False)])
def test_dla_per_release(use_trt, nano_variants, tmp_path, label, ok) -> None:
    use_trt(label)
    opts = _opts(nano_variants, tmp_path, "int8", "int8", dla_core=0, batch_profile=(2, 2, 2))
    if ok:
        assert build_engine(opts).manifest.dla_core == 0
    else:
        with pytest.raises(BackendError, match=r"no DLA on Jetson \(TensorRT 11\.0-11\.4\.0"):
            build_engine(opts)


def test_print_trtexec_on_the_device_matches_the_build(use_trt, nano_variants, tmp_path) -> None:
    """One resolution of every path: the line printed beforehand is the line the build records."""
    from edgevit.engine.trtexec import print_trtexec

    use_trt("10.3")
    opts = _opts(nano_variants, tmp_path, "fp32", "int8", cache=True, workspace_mib=256, opt_level=3)
    printed = print_trtexec(opts)
    result = build_engine(opts)
    assert printed == result.manifest.trtexec_command
    timing = Path(result.manifest.settings["timing_cache"])
    assert timing.is_file() and f"--timingCacheFile={timing}" in printed and "sm8.7" in timing.name
