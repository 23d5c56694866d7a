"""What fedcl prints on the terminal (rich): the run's header, a live progress bar, the results table of a
single-device or federated run, and the one-line result that ``--quiet`` keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def wide_console() -> Console:
    """A console that does not squeeze tables to 80 columns when output is piped or logged."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def method_label(results: dict[str, Any]) -> str:
    """``method+plugin+plugin`` as shown in tables."""
    return "+".join([results["method"], *results.get("plugins", [])])


class ProgressBar:
    """Steps done (tasks, rounds or sweep cells), the accuracy so far and the time left; a no-op when disabled.

    Use as a context manager; :meth:`update` may be called from another thread (the ServerApp's)."""

    def __init__(self, total: int, unit: str, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or wide_console()
        self.enabled = enabled
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[accuracy]}"), TimeElapsedColumn(), TextColumn("left"),
                                  TimeRemainingColumn(), console=self.console, transient=False)
        self._task = self._progress.add_task(unit, total=total, accuracy="accuracy -")

    def __enter__(self) -> Self:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()

    def update(self, done: int, accuracy: float | None = None) -> None:
        """``done`` steps finished; ``accuracy`` (mean over tasks) when measured at this step."""
        if not self.enabled:
            return
        fields = {"accuracy": f"accuracy {accuracy:.3f}"} if accuracy is not None else {}
        self._progress.update(self._task, completed=done, **fields)

    def print(self, text: str) -> None:
        """A line above the bar."""
        if self.enabled:
            self.console.print(text)


def print_header(cfg: Any, console: Console) -> None:
    """One line describing the run about to start."""
    d, m = cfg.data, cfg.model
    console.print(
        f"[bold]fedcl[/] {cfg.method.name} | {m.backbone} + {m.transform.name}{' (per task)' if m.transform.per_task else ''}"
        f" + {m.head.name} head | {d.dataset} {d.scenario} {d.num_tasks} tasks @ {d.image_size}px"
    )


def final_line(results: dict[str, Any], path: Path) -> str:
    """The one line printed by ``--quiet``."""
    return f"final accuracy {results['final_avg_accuracy']:.3f}, forgetting {results['avg_forgetting']:.3f}; results: {path}"


def print_single_device_summary(results: dict[str, Any], path: Path, console: Console | None = None) -> None:
    """The results table of ``fedcl train``."""
    console = console or wide_console()
    table = Table(title="fedcl results")
    for col in ("method", "transform", "final acc", "forgetting", "BWT", "trainable params", "backbone params", "wall s"):
        table.add_column(col)
    table.add_row(
        method_label(results), results["transform"], f"{results['final_avg_accuracy']:.3f}", f"{results['avg_forgetting']:.3f}",
        f"{results['bwt']:.3f}", f"{results['trainable_params']:,}", f"{results['backbone_params']:,}", f"{results['wall_time_s']:.1f}",
    )
    console.print(table)
    console.print(f"results: {path}")


def print_federated_summary(results: dict[str, Any], path: Path, console: Console | None = None) -> None:
    """The results table of ``fedcl simulate``, with the faults and rejected updates of the run."""
    c = results["communication"]
    table = Table(title="fedcl federated results")
    for col in ("clients", "rounds", "method", "final acc", "forgetting", "MB up", "MB down", "vs full FedAvg", "sim. time s", "wall s"):
        table.add_column(col)
    frac = c["fraction_of_full_model"]
    table.add_row(
        str(results["num_clients"]), str(results["rounds"]), f"{method_label(results)}/{results['transform']}",
        f"{results['final_avg_accuracy']:.3f}", f"{results['avg_forgetting']:.3f}",
        f"{c['bytes_up'] / 1e6:.2f}", f"{c['bytes_down'] / 1e6:.2f}", f"{100 * frac:.2f} %" if frac else "-",
        f"{results['simulated_total_time_s']:.1f}", f"{results['wall_time_s']:.1f}",
    )
    console = console or wide_console()
    console.print(table)
    rows = c["per_round"]
    failed, late = sum(r.get("clients_failed", 0) for r in rows), sum(r.get("clients_timed_out", 0) for r in rows)
    no_quorum = [r["round"] for r in rows if r.get("quorum") is False]
    if failed or late or no_quorum:
        console.print(f"[yellow]faults[/]: {failed} client failure(s), {late} late reply(ies)"
                      + (f"; rounds without quorum (global model kept): {no_quorum}" if no_quorum else ""))
    if results.get("rejected_updates"):
        console.print(f"[yellow]{len(results['rejected_updates'])} client update(s) rejected[/]: {results['rejected_updates'][:3]}")
    console.print(f"results: {path}")
