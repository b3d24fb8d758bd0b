"""Benchmarks: ``edgevit bench`` and the code behind it.

>>> from edgevit.bench import BenchConfig, run_bench, format_report
>>> report = run_bench(BenchConfig(artifacts=[Path("model.onnx"), Path("model.int8.onnx")]))
>>> print(format_report(report))
"""

from __future__ import annotations

from edgevit.bench.ratios import compute_ratios
from edgevit.bench.report import format_markdown, format_report, plot_report, write_report
from edgevit.bench.run import run_bench
from edgevit.bench.settings import BenchConfig

__all__ = [
    "BenchConfig",
    "compute_ratios",
    "format_markdown",
    "format_report",
    "plot_report",
    "run_bench",
    "write_report",
]
