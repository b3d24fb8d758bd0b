"""One-pass calibration statistics and the range methods derived from them."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from edgevit.errors import DataError
from edgevit.quant.calibrate import calibrate, calibration_indices, check_images
from edgevit.quant.config import QuantizeConfig
from edgevit.quant.stats import RANGE_METHODS, TensorStats, entropy_amax, mse_amax, percentile_amax
from edgevit.quant.table import CalibrationTable, TensorRange


def test_streaming_histogram_equals_one_shot_and_stays_bounded():
    rng = np.random.default_rng(0)
    # growing scales force several range doublings
    batches = [rng.standard_normal(5000).astype(np.float32) * s for s in (0.1, 1.0, 3.0, 40.0)]
    st = TensorStats(bins=512)
    for b in batches:
        st.update(b)
        assert st.hist is not None and st.hist.shape == (512,)  # memory does not grow
    allx = np.abs(np.concatenate(batches))
    ref, _ = np.histogram(allx, bins=512, range=(0.0, st.hist_max))
    assert st.hist.sum() == allx.size
    assert np.abs(st.hist - ref).sum() <= 4  # only float rounding at bin edges may differ
    assert st.amax == pytest.approx(float(allx.max()))
    assert st.min == pytest.approx(float(np.concatenate(batches).min()))


def test_percentile_and_mse_match_brute_force():
    rng = np.random.default_rng(1)
    x = rng.laplace(size=200_000).astype(np.float32)
    st = TensorStats(bins=2048)
    for chunk in np.array_split(x, 7):
        st.update(chunk)
    width = st.hist_max / st.bins
    assert st.amax_for("max") == pytest.approx(float(np.abs(x).max()))
    p = st.amax_for("percentile", 99.9)
    assert abs(p - np.percentile(np.abs(x), 99.9)) <= 2 * width

    def qmse(a: float) -> float:
        s = a / 127.0
        return float(np.mean((x - np.clip(np.rint(x / s), -127, 127) * s) ** 2))

    a_mse = st.amax_for("mse")
    grid = np.linspace(0.05, 1.0, 60) * st.amax
    best = min(qmse(a) for a in grid)
    assert qmse(a_mse) <= 1.05 * best  # the closed form finds the brute-force optimum
    assert qmse(a_mse) < 0.7 * qmse(st.amax_for("max"))  # clipping a Laplace tail pays
    for m in RANGE_METHODS:
        assert 0 < st.amax_for(m) <= st.amax + 1e-6


def _entropy_naive(hist: np.ndarray, width: float, levels: int = 128) -> float:
    """The definition, one threshold at a time (the quadratic loop the vectorized code replaces)."""
    h = hist.astype(np.float64)
    total = h.sum()
    best, best_i = np.inf, len(h)
    for i in range(levels, len(h) + 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        sliced = h[:i]
        q = np.zeros(i)
        edges = (i * np.arange(levels + 1)) // levels
        for a, b in itertools.pairwise(edges):
            nz = sliced[a:b] > 0
            if nz.any():
                q[a:b][nz] = sliced[a:b].sum() / nz.sum()
        q = q / sliced.sum()
        p = p / total
        if p[-1] > 0 and q[-1] == 0:
            q[-1] = 1e-4
        m = p > 0
        kl = float(np.sum(p[m] * np.log(p[m] / q[m])))
        if kl < best - 1e-12:
            best, best_i = kl, i
    return best_i * width


def test_vectorized_entropy_equals_the_definition():
    rng = np.random.default_rng(2)
    for data in (rng.standard_normal(50_000), rng.laplace(size=50_000), np.r_[rng.standard_normal(50_000), [30.0]]):
        hist, edges = np.histogram(np.abs(data), bins=384)
        w = edges[1] - edges[0]
        assert entropy_amax(hist, w) == pytest.approx(_entropy_naive(hist, w))
    hist = np.zeros(512, np.int64)
    assert entropy_amax(hist, 1.0) == 512.0 and mse_amax(hist + 1, 1.0) > 0
    assert percentile_amax(hist, 1.0, 99.0) == 0.0


def test_auto_records_its_choice_per_tensor(nano_artifacts, digits, tmp_path):
    from edgevit.artifacts import read_onnx_info

    info = read_onnx_info(nano_artifacts.fp32_onnx)
    images = digits.train.images[:64]
    cfg = QuantizeConfig(method="auto", num_images=64, auto_images=32, smoothquant=False)
    table = calibrate(nano_artifacts.fp32_onnx, images, info, cfg, "digits:train", progress=False)
    quantized = {n: r for n, r in table.tensors.items() if r.quantized}
    assert table.method == "auto" and len(quantized) >= 15
    for r in table.tensors.values():
        assert r.method in (*RANGE_METHODS, "input", "softmax")
        assert r.candidates is not None and set(r.candidates) == set(RANGE_METHODS)
        assert r.amax == pytest.approx(r.candidates.get(r.method, r.amax))
    assert table.settings["auto_images_used"] == 32 and "layer output error" in table.settings["auto"]
    # the matmul inputs moved off percentile where another bound disturbs their layer less
    assert len({r.method for r in quantized.values()}) >= 2
    table.save(tmp_path / "t.json")
    again = CalibrationTable.load(tmp_path / "t.json")
    assert again.tensors == table.tensors and again.transforms == table.transforms


def test_layer_errors_are_the_change_of_the_readers_output():
    """auto's measure: for a Linear, the squared change of x @ W_int8 when x is rounded with a
    bound; for an attention matmul, of a @ b when one input is rounded."""
    from onnx import TensorProto, helper, numpy_helper

    from edgevit.quant.graph import weight_fake_quant
    from edgevit.quant.layer_error import choose, fake_quant, layer_errors

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
            helper.make_node("MatMul", ["h", "hT"], ["y"], name="attn"),
            helper.make_node("Transpose", ["h"], ["hT"], perm=[0, 2, 1]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 5, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 5, 5])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    x[0, 0, 0] = 9.0  # an outlier: the max bound rounds everything else coarsely
    cand = {"x": {"max": 9.0, "percentile": 2.0}, "h": {"max": 5.0, "percentile": 1.0}}
    errors = layer_errors(model, [x], cand)
    wq = weight_fake_quant(w, 1)
    for method, bound in cand["x"].items():
        want = np.sum(((fake_quant(x, bound) - x).reshape(-1, 4) @ wq).astype(np.float64) ** 2)
        assert errors["x"][method] == pytest.approx(want, rel=1e-5)
    h = x @ w
    for method, bound in cand["h"].items():
        want = np.sum(np.matmul(fake_quant(h, bound) - h, h.transpose(0, 2, 1)).astype(np.float64) ** 2)
        assert errors["h"][method] == pytest.approx(want, rel=1e-4)
    assert choose(errors, prefer="percentile")["x"] == min(errors["x"], key=errors["x"].get)


def test_known_ranges_are_never_clipped(nano_artifacts, digits):
    """The network input keeps the whole range the preprocessing can produce, and a quantized
    Softmax output never falls below its 99.999th percentile, whatever the method (percentile
    50 would clip both)."""
    from edgevit.artifacts import read_onnx_info
    from edgevit.quant.calibrate import SOFTMAX_FLOOR_PERCENTILE

    info = read_onnx_info(nano_artifacts.fp32_onnx)
    cfg = QuantizeConfig(method="percentile", percentile=50.0, num_images=64, smoothquant=False, int8_attention=True)
    table = calibrate(nano_artifacts.fp32_onnx, digits.train.images[:64], info, cfg, "digits:train", progress=False)
    pre = info.preprocess
    bound = max(abs((0 - m) / s) for m, s in zip(pre.mean, pre.std, strict=True))
    bound = max(bound, max(abs((1 - m) / s) for m, s in zip(pre.mean, pre.std, strict=True)))
    assert table.tensors["images"].amax == pytest.approx(bound) and table.tensors["images"].method == "input"
    softmax = [r for r in table.tensors.values() if r.method == "softmax-floor"]
    assert len(softmax) == info.model_config.depth
    for r in softmax:
        assert 0.3 < r.amax <= r.max <= 1.0 and r.quantized
    assert SOFTMAX_FLOOR_PERCENTILE == 99.999
    others = [r for r in table.tensors.values() if r.quantized and r.method == "percentile"]
    assert others and all(r.amax < max(abs(r.min), abs(r.max)) for r in others)


def test_old_tables_still_load(tmp_path):
    old = {
        "format": "edgevit-calibration/1",
        "model_sha256": "ab" * 32,
        "method": "percentile",
        "num_images": 8,
        "image_source": "digits:train",
        "tensors": {"images": {"min": -1.0, "max": 1.0, "amax": 1.0, "scale": 1 / 127, "method": "percentile"}},
    }
    (tmp_path / "old.json").write_text(json.dumps(old))
    t = CalibrationTable.load(tmp_path / "old.json")
    assert t.tensors["images"] == TensorRange(-1.0, 1.0, 1.0, "percentile", True, None)
    assert t.transforms == {} and t.float_layers == [] and t.sensitivity is None
    assert "candidates" not in t.to_dict()["tensors"]["images"] and "transforms" not in t.to_dict()


def test_bad_calibration_images_are_refused(nano_artifacts):
    from edgevit.artifacts import read_onnx_info

    info = read_onnx_info(nano_artifacts.fp32_onnx)
    imgs = np.ones((4, 8, 8, 1), np.float32)
    imgs[2, 3, 3, 0] = np.nan
    with pytest.raises(DataError, match="image 2 of the calibration set contains NaN"):
        check_images(imgs)
    with pytest.raises(DataError, match="image 2"):
        calibrate(nano_artifacts.fp32_onnx, imgs, info, QuantizeConfig(num_images=4), "x", progress=False)
    for n in (0, 1):
        with pytest.raises(DataError, match="at least 2"):
            calibrate(nano_artifacts.fp32_onnx, imgs[:n], info, QuantizeConfig(num_images=4), "x", progress=False)
    with pytest.raises(DataError, match="at least 2"):
        calibration_indices(1, 512, 256, 0)
    calib, held = calibration_indices(100, 60, 30, 0)
    assert len(calib) == 60 and len(held) == 30 and not set(calib) & set(held)
