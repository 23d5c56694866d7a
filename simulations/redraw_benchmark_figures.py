"""Redraw the accuracy-vs-MB and forgetting figures of ``docs/benchmark.md`` from its committed runs table.

    .venv/bin/python simulations/redraw_benchmark_figures.py docs/benchmark_cpu_runs.csv docs/figures/benchmark_cpu

``docs/benchmark_cpu_runs.csv`` is the sweep's ``runs.csv`` (one row per run and seed), so the summary (mean,
sample std, 95 % t interval) is recomputed exactly. The accuracy matrices need the raw runs and are not redrawn.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from fedcl import figures
from fedcl.analysis import summarize_runs


def read_summary(path: Path) -> pd.DataFrame:
    """Mean ± sample std over seeds per scenario x partition x method, from a sweep's ``runs.csv``."""
    return summarize_runs(pd.read_csv(path))


def main(argv: list[str]) -> int:
    source, out = Path(argv[0]), Path(argv[1])
    summary = read_summary(source)
    for partition in dict.fromkeys(summary["partition"]):
        figures.plot_accuracy_vs_mb(summary, partition).savefig(out / f"accuracy_vs_mb_{partition}.png", dpi=110)
        figures.plot_forgetting(summary, partition).savefig(out / f"forgetting_{partition}.png", dpi=110)
    print(f"redrew {len(summary)} cells' figures into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
