"""Searches on the simulated INT8 model (:class:`~edgevit.quant.probe.FakeQuantProbe`): the
per-layer sensitivity scan, and the mixed-precision fallback that meets an accuracy budget
(``--budget``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import ArtifactInfo
from edgevit.errors import DataError, QuantizationError
from edgevit.metrics import compare_logits
from edgevit.quant.config import QuantizeConfig
from edgevit.quant.probe import FakeQuantProbe
from edgevit.quant.table import CalibrationTable


def mean_kl(ref: np.ndarray, cand: np.ndarray) -> float:
    return compare_logits(ref, cand)["mean_kl"]


@dataclass
class Score:
    top1: float  # percent
    drop: float  # points against FP32 on the same images
    agreement: float  # percent
    mean_kl: float


@dataclass
class SensitivityReport:
    """The scan and the fallback choice, as written into the calibration table."""

    images: int
    seed: int
    budget: float | None  # largest top-1 drop in points, on the held-out slice
    min_agreement: float | None
    fp32_top1: float
    int8: Score  # every layer quantized
    layers: dict[str, float]  # layer -> mean KL at the output with only that layer in INT8
    ranking: list[str]  # most damaging first
    float_layers: list[str]  # chosen fallback (FP16 on the device)
    result: Score  # with the fallback
    met: bool
    evaluations: int
    message: str = ""
    candidates_tried: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray) -> Score:
    c = compare_logits(ref, cand)
    ref_top1 = 100.0 * float((ref.argmax(1) == labels).mean())
    top1 = 100.0 * float((cand.argmax(1) == labels).mean())
    return Score(top1=top1, drop=ref_top1 - top1, agreement=c["agreement"], mean_kl=c["mean_kl"])


def scan_and_fallback(
    probe: FakeQuantProbe,
    x: np.ndarray,
    labels: np.ndarray,
    amax: dict[str, float],
    budget: float | None,
    min_agreement: float | None = None,
    seed: int = 0,
    max_exhaustive: int = 400,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> SensitivityReport:
    """Rank the layers by the damage each alone does, then leave the fewest in floating
    point that meet ``budget`` (top-1 drop, points) and ``min_agreement`` (percent).

    Search: add layers in ranking order until the budget holds (``k`` layers); then try
    every set of fewer layers, smallest first, while that costs at most ``max_exhaustive``
    evaluations; then drop any chosen layer the budget does not need.
    """
    start = probe.evaluations
    ref = probe.float_logits(x)
    fp32_top1 = 100.0 * float((ref.argmax(1) == labels).mean())
    int8 = _score(ref, probe.logits(x, amax), labels)
    names = list(probe.layers)
    damage = {}
    it: Iterable[str] = names
    if progress is not None:
        it = progress(names)
    for name in it:
        others = [n for n in names if n != name]
        damage[name] = mean_kl(ref, probe.logits(x, amax, others))
    ranking = sorted(names, key=lambda n: (-damage[n], names.index(n)))

    def meets(s: Score) -> bool:
        return (budget is None or s.drop <= budget + 1e-9) and (min_agreement is None or s.agreement >= min_agreement)

    cache: dict[frozenset[str], Score] = {}

    def evaluate(fp: Iterable[str]) -> Score:
        key = frozenset(fp)
        if key not in cache:
            cache[key] = _score(ref, probe.logits(x, amax, key), labels)
        return cache[key]

    if budget is None and min_agreement is None:
        chosen: list[str] = []
    else:
        chosen = []
        k_found = None
        for k in range(len(ranking) + 1):
            if meets(evaluate(ranking[:k])):
                k_found = k
                break
        if k_found is not None:
            chosen = ranking[:k_found]
            for j in range(1, k_found):
                combos = list(itertools.combinations(ranking, j))
                if len(combos) > max_exhaustive:
                    break
                hits = [c for c in combos if meets(evaluate(c))]
                if hits:
                    chosen = list(min(hits, key=lambda c: (evaluate(c).mean_kl, [ranking.index(n) for n in c])))
                    break
            for n in sorted(chosen, key=lambda n: damage[n]):
                smaller = [c for c in chosen if c != n]
                if len(smaller) < len(chosen) and meets(evaluate(smaller)):
                    chosen = smaller
    result = evaluate(chosen)
    met = meets(result)
    message = ""
    if not met:
        best = min(cache.items(), key=lambda kv: (kv[1].drop, -kv[1].agreement, len(kv[0])))
        chosen, result = sorted(best[0], key=ranking.index), best[1]
        message = (
            f"the budget (drop <= {budget} points"
            + (f", agreement >= {min_agreement}%" if min_agreement is not None else "")
            + f") cannot be met even with every layer in floating point; kept the best model found "
            f"({len(chosen)} layers in floating point, drop {result.drop:.2f} points, "
            f"agreement {result.agreement:.2f}%)"
        )
    tried = [
        {"float_layers": sorted(k, key=ranking.index), **asdict(v)}
        for k, v in sorted(cache.items(), key=lambda kv: len(kv[0]))
    ][:50]
    return SensitivityReport(
        images=len(x),
        seed=seed,
        budget=budget,
        min_agreement=min_agreement,
        fp32_top1=fp32_top1,
        int8=int8,
        layers={n: float(damage[n]) for n in ranking},
        ranking=ranking,
        float_layers=[n for n in ranking if n in set(chosen)],
        result=result,
        met=met,
        evaluations=probe.evaluations - start,
        message=message,
        candidates_tried=tried,
    )


def choose_fallback(
    model_path: str | Path,
    table: CalibrationTable,
    images: np.ndarray,
    labels: np.ndarray,
    info: ArtifactInfo,
    cfg: QuantizeConfig,
    progress: bool = True,
) -> Any:
    """Sensitivity scan on held-out images and the fewest floating-point layers meeting
    ``cfg.budget``/``cfg.min_agreement``; writes both into ``table`` and returns the report."""
    import onnx

    from edgevit.quant.calibrate import check_images, float_nodes, prepare_model, progress_bar

    if len(images) < 2:
        raise DataError(f"the sensitivity scan needs at least 2 held-out images, got {len(images)}")
    check_images(images, "held-out slice")
    model = onnx.load(str(model_path))
    prepare_model(model, table.transforms)
    probe = FakeQuantProbe(model, cfg.op_types, threads=cfg.threads, exclude=float_nodes(model, table.settings))
    amax = {t: table.tensors[t].amax for t in probe.activations if t in table.tensors}
    missing = [t for t in probe.activations if t not in amax]
    if missing:
        raise QuantizationError(f"the calibration table has no range for {missing[0]!r}; recalibrate")
    report = scan_and_fallback(
        probe,
        info.preprocess(images),
        labels,
        amax,
        cfg.budget,
        cfg.min_agreement,
        seed=cfg.seed,
        progress=progress_bar(progress, "sensitivity scan"),
    )
    table.float_layers = list(report.float_layers)
    table.sensitivity = report.to_dict()
    return report
