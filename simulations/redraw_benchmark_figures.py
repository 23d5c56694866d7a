"""Redraw the accuracy-vs-MB and forgetting figures of ``docs/benchmark.md`` from its committed summary table.

    .venv/bin/python simulations/redraw_benchmark_figures.py docs/benchmark.md docs/figures/benchmark_cpu

The raw runs (``runs/benchmark_cpu``) are not committed, only the table of means ± population std (ddof=0,
as the analysis computed it then) over the seeds. The sample std (ddof=1) follows exactly:
s = sigma * sqrt(n / (n - 1)). The accuracy matrices need the raw runs and are not redrawn.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from fedcl import figures

COLUMNS = {"final accuracy": "final_acc", "forgetting": "forgetting", "MB exchanged": "total_mb"}


def read_summary_table(path: Path) -> pd.DataFrame:
    """The ``| scenario | partition | method | ... | seeds |`` table: means and sample std (from the population std)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[1:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        if cells.get("scenario") in (None, "scenario") or "seeds" not in cells:
            continue
        n = int(cells["seeds"])
        row = {k: cells[k] for k in ("scenario", "partition", "method")}
        for title, key in COLUMNS.items():
            mean, _, std = cells[title].partition(" ± ")
            row[key] = float(mean)
            row[f"{key}_std"] = float(std) * math.sqrt(n / (n - 1)) if std and n > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str]) -> int:
    source, out = Path(argv[0]), Path(argv[1])
    summary = read_summary_table(source)
    for partition in dict.fromkeys(summary["partition"]):
        figures.plot_accuracy_vs_mb(summary, partition).savefig(out / f"accuracy_vs_mb_{partition}.png", dpi=110)
        figures.plot_forgetting(summary, partition).savefig(out / f"forgetting_{partition}.png", dpi=110)
    print(f"redrew {len(summary)} cells' figures into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
