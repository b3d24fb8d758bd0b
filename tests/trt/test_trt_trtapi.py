"""TrtVersion: the calibration cache header per TensorRT numbering, the trtexec options per
release, import hints that say the truth for the machine, and the collecting logger."""

from __future__ import annotations

import pytest

from edgevit.errors import BackendError
from edgevit.trt import trtapi
from edgevit.trt.trtapi import CHECK_HINT, DEVICE_HINT, TrtVersion, import_tensorrt, make_logger


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("8.2.1", "TRT-8201-EntropyCalibration2"),
        ("8.5.2", "TRT-8502-EntropyCalibration2"),
        ("8.6.1", "TRT-8601-EntropyCalibration2"),
        # NvInferRuntimeBase.h from 10.0: NV_TENSORRT_VERSION_INT = major * 10000 + minor * 100 + patch
        ("10.3.0", "TRT-100300-EntropyCalibration2"),
        ("10.13.3", "TRT-101303-EntropyCalibration2"),
        ("10.16.0", "TRT-101600-EntropyCalibration2"),
    ],
)
def test_cache_header_follows_tensorrt_numbering(version: str, tag: str) -> None:
    assert TrtVersion.parse(version).calib_tag == tag


@pytest.mark.parametrize(
    ("version", "mem_pool", "opt_level", "strongly_flag", "layer_precisions"),
    [
        ("8.2.1", False, False, False, False),
        ("8.5.2", True, False, False, True),
        ("8.6.2", True, True, False, True),
        ("10.3.0", True, True, True, True),
        ("11.1.0", True, True, False, False),
    ],
)
def test_trtexec_options_per_release(version, mem_pool, opt_level, strongly_flag, layer_precisions) -> None:
    v = TrtVersion.parse(version)
    assert (v.trtexec_has_mem_pool, v.has_opt_level, v.trtexec_strongly_typed_flag) == (
        mem_pool,
        opt_level,
        strongly_flag,
    )
    assert v.trtexec_has_layer_precisions == layer_precisions


def test_layernorm_importer_from_8_6() -> None:
    assert not TrtVersion.parse("8.5.2").parses_layernorm
    assert TrtVersion.parse("8.6.1").parses_layernorm and TrtVersion.parse("10.3.0").parses_layernorm
    assert TrtVersion.parse("1.7.1", module="tensorrt_rtx").parses_layernorm


def test_missing_tensorrt_hint_says_what_fits_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """#15: the parse check works with tensorrt-rtx on a PC; a device needs JetPack's bindings."""
    real_import = __import__

    def no_tensorrt(name, *args, **kwargs):
        if name in ("tensorrt", "tensorrt_rtx"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", no_tensorrt)
    with pytest.raises(BackendError) as device_err:
        import_tensorrt()
    with pytest.raises(BackendError) as check_err:
        import_tensorrt(allow_rtx=True, prefer_rtx=True, hint=CHECK_HINT)
    assert "python3-libnvinfer" in str(device_err.value) and DEVICE_HINT in str(device_err.value)
    assert "pip install tensorrt-rtx" in str(check_err.value) and "pip install tensorrt`" not in str(check_err.value)


def test_logger_keeps_dla_placement_lines_at_any_severity() -> None:
    class ILogger:
        def __init__(self) -> None:
            pass

    fake = type("trt", (), {"ILogger": ILogger})
    logger = make_logger(fake, "WARNING", also=("[DlaLayer]",))

    def sev(name):
        return type("S", (), {"name": name})()

    logger.trt_logger.log(sev("VERBOSE"), "[DlaLayer] {ForeignNode[a...b]}")
    logger.trt_logger.log(sev("INFO"), "tactic timing")
    logger.trt_logger.log(sev("ERROR"), "bad")
    assert logger.messages() == ["[DlaLayer] {ForeignNode[a...b]}", "bad"]
    assert logger.errors() == ["bad"] and trtapi.TrtVersion.parse("10.3").patch == 0
