"""Issue #15, F2 and F3: a calibration table with NaN/Inf, negative, zero or huge ranges,
or SmoothQuant scales that do not fit the model, is refused on load with one line; no
TensorRT cache is written beside it and a good INT8 model at the output is never touched."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from typing import Any

import pytest
from faultkit import assert_one_line_error, leftovers, run_cli

from edgevit.errors import ArtifactError
from edgevit.quant.table import CalibrationTable


def _first_quantized(t: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in t["tensors"].values() if r["quantized"])


def _set_amax(value: float) -> Callable[[dict[str, Any]], None]:
    def edit(t: dict[str, Any]) -> None:
        _first_quantized(t)["amax"] = value

    return edit


def _scales(t: dict[str, Any]) -> list[float]:
    return next(iter(t["transforms"]["smoothquant"]["scales"].values()))


def _shorten_scales(t: dict[str, Any]) -> None:
    key = next(iter(t["transforms"]["smoothquant"]["scales"]))
    t["transforms"]["smoothquant"]["scales"][key] = _scales(t)[:-3]


def _zero_scale(t: dict[str, Any]) -> None:
    _scales(t)[0] = 0.0


def _nan_scale(t: dict[str, Any]) -> None:
    _scales(t)[5] = math.nan


def _foreign_scales(t: dict[str, Any]) -> None:
    scales = t["transforms"]["smoothquant"]["scales"]
    scales["/not/a/layernorm"] = scales.pop(next(iter(scales)))


def _nan_observed(t: dict[str, Any]) -> None:
    _first_quantized(t)["max"] = math.inf


CASES = {
    "amax NaN": (_set_amax(math.nan), "nan"),
    "amax Inf": (_set_amax(math.inf), "inf"),
    "amax -3": (_set_amax(-3.0), "-3"),
    "amax 0": (_set_amax(0.0), "range (amax) 0"),
    "amax 1e38": (_set_amax(1e38), "1e+38"),
    "amax far beyond observed": (_set_amax(5000.0), "far beyond the observed"),
    "observed Inf": (_nan_observed, "observed range"),
    "SmoothQuant scales too short": (_shorten_scales, "have 61 values but its LayerNorm has 64 channels"),
    "SmoothQuant scale 0": (_zero_scale, "SmoothQuant scales"),
    "SmoothQuant scale NaN": (_nan_scale, "SmoothQuant scales"),
    "SmoothQuant scales for no LayerNorm": (_foreign_scales, "/not/a/layernorm"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_table_is_refused_and_nothing_is_written(run_copy, tmp_path, case):
    edit, fragment = CASES[case]
    table = json.loads(run_copy.table.read_text())
    assert "smoothquant" in table.get("transforms", {}), "the fixture's table should carry SmoothQuant scales"
    edit(table)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(table))  # NaN/Infinity as Python's json writes them
    out = tmp_path / "good.int8.onnx"
    shutil.copy2(run_copy.int8, out)
    before = out.read_bytes()

    proc = run_cli("quantize", str(run_copy.fp32), "-o", str(out), "--calib-table", str(bad), "-q")

    line = assert_one_line_error(proc, "bad.json", fragment)
    assert "recalibrate" in line
    assert out.read_bytes() == before  # the good model is untouched
    assert not (tmp_path / "bad.cache").exists()  # no bogus TensorRT cache
    assert not leftovers(tmp_path)


def test_load_refuses_and_save_refuses_the_same(nano_artifacts, tmp_path):
    table = CalibrationTable.load(nano_artifacts.calib_table)  # a good table passes
    name = next(iter(table.tensors))
    bad = json.loads(nano_artifacts.calib_table.read_text())
    bad["tensors"][name]["amax"] = -1.0
    path = tmp_path / "t.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match="range"):
        CalibrationTable.load(path)
    from dataclasses import replace

    table.tensors[name] = replace(table.tensors[name], amax=math.nan)
    with pytest.raises(ArtifactError, match="nan"):
        table.save(tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()
