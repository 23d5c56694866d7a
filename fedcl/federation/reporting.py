"""Summary table of a federated run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from fedcl.reporting import method_label, wide_console


def print_federated_summary(results: dict[str, Any], path: Path) -> None:
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
    console = wide_console()
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
