"""Federated continual-learning sweep: methods x scenarios x partitions x seeds.

    .venv/bin/python simulations/sweep.py --plan simulations/benchmark_cpu.toml --out runs/benchmark_cpu --jobs 2

Runs every cell of the sweep plan (one ``fedcl simulate`` process each; finished cells are skipped,
so an interrupted sweep resumes) under a progress bar, then writes under ``--out``: ``runs.csv`` (one row
per run), ``summary.csv`` and ``summary.md`` (mean ± sample std over seeds, 95 % t interval), and
``figures/`` with ``report.md`` (``fedcl report``): ``accuracy_vs_mb_<partition>.png``,
``forgetting_<partition>.png`` and ``accuracy_matrices_<scenario>.png``. ``--report-only`` skips running.
Needs the ``analysis`` extra (matplotlib, pandas).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedcl.errors import FedclError
from fedcl.optional import require_analysis


def report(out: Path) -> None:
    """The tables and the report (with its figures) of every run under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    from fedcl.analysis import load_runs, summarize_runs, summary_markdown
    from fedcl.report import write_report

    path = write_report([out], out / "figures")  # first: it checks every results.json (one error line otherwise)
    runs = load_runs(out)
    runs.to_csv(out / "runs.csv", index=False)
    summary = summarize_runs(runs)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(summary_markdown(summary))
    print(summary_markdown(summary))
    print(f"wrote {out / 'summary.md'}, {out / 'runs.csv'} and {path} with its figures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", "--grid", dest="plan", default="simulations/benchmark_cpu.toml", help="sweep plan (TOML)")
    parser.add_argument("--out", default=None, help="output folder (default runs/<plan name>)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at the same time")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    out = Path(args.out or Path("runs") / Path(args.plan).stem)
    failed: list[dict] = []
    try:
        require_analysis("the sweep's tables and figures")
        if not args.report_only:
            from fedcl.sweep import read_plan, run_plan

            statuses = run_plan(read_plan(args.plan), out, args.jobs, quiet=args.quiet)
            failed = [s for s in statuses if not s["status"].startswith(("ok", "cached"))]
            if failed:
                print(f"{len(failed)} cell(s) failed: " + "; ".join(f"{s['method']}/{s['scenario']}/{s['partition']}/seed{s['seed']}: "
                                                                     f"{s['status']}" for s in failed), file=sys.stderr)
        report(out)
    except FedclError as exc:
        print(f"fedcl: error: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
