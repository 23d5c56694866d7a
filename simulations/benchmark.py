"""Federated continual-learning benchmark: methods x scenarios x partitions x seeds.

    .venv/bin/python simulations/benchmark.py --grid simulations/benchmark_cpu.toml --out runs/benchmark_cpu --jobs 2

Runs every cell of the grid (one ``fedcl simulate`` process each; finished cells are
skipped, so an interrupted sweep resumes), then writes under ``--out``:
``runs.csv`` (one row per run), ``summary.csv`` and ``summary.md`` (mean ± std over
seeds) and figures: ``accuracy_vs_mb_<partition>.png``, ``forgetting_<partition>.png``
and ``accuracy_matrices_<scenario>.png``. ``--report-only`` skips running.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from fedcl.analysis import load_runs, plot_accuracy_matrices, plot_accuracy_vs_mb, plot_forgetting, read_results, summarize_runs, summary_markdown  # noqa: E402
from fedcl.errors import FedclError  # noqa: E402
from fedcl.sweep import read_grid, run_grid  # noqa: E402


def report(out: Path) -> None:
    runs = load_runs(out)
    if runs.empty:
        raise FedclError(f"no results.json under {out}")
    runs.to_csv(out / "runs.csv", index=False)
    summary = summarize_runs(runs)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(summary_markdown(summary))
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    for partition in dict.fromkeys(summary["partition"]):
        plot_accuracy_vs_mb(summary, partition).savefig(figures / f"accuracy_vs_mb_{partition}.png", dpi=110)
        plot_forgetting(summary, partition).savefig(figures / f"forgetting_{partition}.png", dpi=110)
    first_partition, first_seed = runs["partition"].iloc[0], runs["seed"].min()
    for scenario in dict.fromkeys(runs["scenario"]):
        chosen = runs[(runs["scenario"] == scenario) & (runs["partition"] == first_partition) & (runs["seed"] == first_seed)]
        matrices = {r["method"]: read_results(r["path"])["accuracy_matrix"] for _, r in chosen.iterrows()}
        plot_accuracy_matrices(matrices).savefig(figures / f"accuracy_matrices_{scenario}.png", dpi=110)
    print(summary_markdown(summary))
    print(f"wrote {out / 'summary.md'}, {out / 'runs.csv'} and {figures}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="simulations/benchmark_cpu.toml")
    parser.add_argument("--out", default=None, help="output folder (default runs/<grid name>)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at the same time")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out or Path("runs") / Path(args.grid).stem)
    try:
        if not args.report_only:
            grid = read_grid(args.grid)
            statuses = run_grid(grid, out, args.jobs)
            failed = [s for s in statuses if not s["status"].startswith(("ok", "cached"))]
            if failed:
                print(f"{len(failed)} cell(s) failed: " + "; ".join(f"{s['method']}/{s['scenario']}/{s['partition']}/seed{s['seed']}: {s['status']}" for s in failed), file=sys.stderr)
        report(out)
    except FedclError as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        return 2
    return 1 if not args.report_only and failed else 0


if __name__ == "__main__":
    sys.exit(main())
