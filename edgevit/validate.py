"""Prove how much accuracy a candidate (INT8) kept against its reference (FP32).

Both models run on the same held-out images (the test split by default). The report
has top-1 (and top-5 with at least 5 classes) of each, the drop in points, top-1
agreement, mean KL divergence of the softmax outputs, cosine similarity of the logits
and per-class accuracy of both; it is written as JSON and Markdown. Gates: ``max_drop``
(points) and ``min_agreement`` (percent). Works for any two artifacts the runtime
loads, and needs no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import write_json_atomic, write_text_atomic
from edgevit.errors import DataError, InputError
from edgevit.metrics import compare_logits
from edgevit.runtime import Model


@dataclass
class ModelScore:
    name: str
    backend: str
    precision: str
    top1: float  # percent
    top5: float | None  # percent; None with fewer than 5 classes
    per_class: dict[str, float]  # class -> top-1 percent


@dataclass
class ValidationReport:
    reference: ModelScore
    candidate: ModelScore
    num_images: int
    data: str
    drop: float  # reference top-1 minus candidate top-1, in points
    agreement: float  # percent of images where both pick the same top-1 class
    mean_kl: float  # mean KL(reference || candidate) of the softmax outputs, in nats
    cosine: float  # mean cosine similarity of the logit vectors
    max_abs_logit_diff: float
    max_drop: float
    min_agreement: float
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def to_markdown(self) -> str:
        r, c = self.reference, self.candidate
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)
        lines = [
            f"# Validation: {c.name} against {r.name}",
            "",
            f"{self.num_images} images from `{self.data}`. Gates: drop <= {self.max_drop:g} points, "
            f"agreement >= {self.min_agreement:g}%. **{verdict}**",
            "",
            "| metric | reference | candidate |",
            "|---|---|---|",
            f"| artifact | `{r.name}` | `{c.name}` |",
            f"| precision / backend | {r.precision} / {r.backend} | {c.precision} / {c.backend} |",
            f"| top-1 | {r.top1:.2f}% | {c.top1:.2f}% |",
        ]
        if r.top5 is not None and c.top5 is not None:
            lines.append(f"| top-5 | {r.top5:.2f}% | {c.top5:.2f}% |")
        lines += [
            "",
            "| comparison | value |",
            "|---|---|",
            f"| top-1 drop | {self.drop:+.2f} points |",
            f"| top-1 agreement | {self.agreement:.2f}% |",
            f"| mean KL divergence | {self.mean_kl:.3g} nats |",
            f"| mean logit cosine | {self.cosine:.6f} |",
            f"| max abs logit difference | {self.max_abs_logit_diff:.4g} |",
            "",
            "| class | reference top-1 | candidate top-1 |",
            "|---|---|---|",
        ]
        for name in r.per_class:
            lines.append(f"| {name} | {r.per_class[name]:.1f}% | {c.per_class.get(name, float('nan')):.1f}% |")
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | Path, stem: str = "validation") -> tuple[Path, Path]:
        out_dir = Path(out_dir)
        json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        write_json_atomic(json_path, self.to_dict(), what="validation report")
        write_text_atomic(md_path, self.to_markdown(), what="validation report")
        return json_path, md_path


def _score(model: Model, logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> ModelScore:
    order = np.argsort(-logits, axis=1, kind="stable")
    top1 = order[:, 0] == labels
    top5 = (order[:, :5] == labels[:, None]).any(axis=1) if logits.shape[1] >= 5 else None
    per_class = {}
    for i, name in enumerate(class_names):
        mask = labels == i
        if mask.any():
            per_class[name] = float(100.0 * top1[mask].mean())
    return ModelScore(
        name=model.path.name if model.path else "model",
        backend=model.backend,
        precision=model.info.precision,
        top1=float(100.0 * top1.mean()),
        top5=float(100.0 * top5.mean()) if top5 is not None else None,
        per_class=per_class,
    )


def validate(
    reference: Model,
    candidate: Model,
    images: np.ndarray,
    labels: np.ndarray,
    data: str = "",
    max_drop: float = 1.0,
    min_agreement: float = 98.0,
) -> ValidationReport:
    """Run both models on the same images and compare them."""
    if len(images) == 0:
        raise DataError("no images to validate on")
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} labels")
    if reference.class_names != candidate.class_names:
        raise InputError("reference and candidate have different class names; compare models of the same training run")
    if reference.preprocess != candidate.preprocess:
        raise InputError("reference and candidate preprocess images differently; they are not the same model")
    names = reference.class_names
    if labels.min() < 0 or labels.max() >= len(names):
        raise InputError(f"labels must be in 0..{len(names) - 1}")
    # Preprocess once, feed the same tensor to both: identical input, by construction.
    x = reference.preprocess(images)
    ref_logits = reference.logits(x)
    cand_logits = candidate.logits(x)
    r = _score(reference, ref_logits, labels, names)
    c = _score(candidate, cand_logits, labels, names)
    cmp = compare_logits(ref_logits, cand_logits)
    report = ValidationReport(
        reference=r,
        candidate=c,
        num_images=len(images),
        data=data,
        drop=r.top1 - c.top1,
        max_drop=max_drop,
        min_agreement=min_agreement,
        **cmp,
    )
    if report.drop > max_drop:
        report.failures.append(f"top-1 drop {report.drop:.2f} points > {max_drop:g}")
    if report.agreement < min_agreement:
        report.failures.append(f"agreement {report.agreement:.2f}% < {min_agreement:g}%")
    return report
