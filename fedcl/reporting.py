"""Console progress and the summary table (rich)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def wide_console() -> Console:
    """A console that does not squeeze tables to 80 columns when output is piped or logged."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def method_label(results: dict[str, Any]) -> str:
    """``method+plugin+plugin`` as shown in tables."""
    return "+".join([results["method"], *results.get("plugins", [])])


class Reporter:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = wide_console()
        self.num_tasks = 0

    def start(self, cfg: Any) -> None:
        self.num_tasks = cfg.data.num_tasks
        if not self.quiet:
            d, m = cfg.data, cfg.model
            self.console.print(
                f"[bold]fedcl[/] {cfg.method.name} | {m.backbone} + {m.transform.name}{' (per task)' if m.transform.per_task else ''}"
                f" + {m.head.name} head | {d.dataset} {d.scenario} {d.num_tasks} tasks @ {d.image_size}px"
            )

    def task_done(self, task: int, row: list[float]) -> None:
        if not self.quiet:
            accs = " ".join(f"{a:.2f}" for a in row)
            self.console.print(f"  task {task + 1}/{self.num_tasks} done | accuracy per task: {accs}")

    def summary(self, results: dict[str, Any], path: Path) -> None:
        if self.quiet:
            return
        table = Table(title="fedcl results")
        for col in ("method", "transform", "final acc", "forgetting", "BWT", "trainable params", "backbone params", "wall s"):
            table.add_column(col)
        table.add_row(
            method_label(results), results["transform"], f"{results['final_avg_accuracy']:.3f}", f"{results['avg_forgetting']:.3f}",
            f"{results['bwt']:.3f}", f"{results['trainable_params']:,}", f"{results['backbone_params']:,}", f"{results['wall_time_s']:.1f}",
        )
        self.console.print(table)
        self.console.print(f"results: {path}")
