"""The table of docs/federated_statistics.md from the runs of simulations/federated_statistics.sh.

    .venv/bin/python simulations/federated_statistics_table.py [runs/federated_statistics]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SETTINGS = {"single": "single device", "iid": "10 clients, IID", "dir0.5": "10 clients, Dirichlet 0.5", "dir0.1": "10 clients, Dirichlet 0.1"}


def mean_std(values: list[float], scale: float = 1.0, digits: int = 4) -> str:
    a = np.array(values, dtype=float) * scale
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1):.{digits}f}" if len(a) > 1 else f"{a.mean():.{digits}f}"


def row(head: str, setting: str, runs: list[dict]) -> str:
    acc = mean_std([r["final_avg_accuracy"] for r in runs])
    inc = mean_std([r["avg_incremental_accuracy"] for r in runs])
    per_seed = ", ".join(f"{r['final_avg_accuracy']:.4f}" for r in runs)
    comm = [r.get("communication") for r in runs]
    if comm[0] is None:
        return f"| {head} | {SETTINGS[setting]} | {acc} | {per_seed} | {inc} | - | - | - | - |"
    up = mean_std([c["bytes_up_per_client_per_task"] for c in comm], 1e-6, 2)
    total = mean_std([c["bytes_per_client_per_task"] for c in comm], 1e-6, 2)
    frac = mean_std([c["fraction_of_full_model"] for c in comm], 1.0, 3)
    collect = mean_std([c["collect_step"]["clients_contributed"] for c in comm], 1.0, 1)
    return f"| {head} | {SETTINGS[setting]} | {acc} | {per_seed} | {inc} | {up} | {total} | {frac} | {collect} |"


def main(root: Path) -> None:
    print("| head | setting | final accuracy | per seed (0, 1, 2) | avg incremental accuracy | MB up / client / task "
          "| MB up+down / client / task | fraction of full-model FedAvg | clients in collect step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for head in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for setting in SETTINGS:
            runs = [json.loads(p.read_text()) for p in sorted((root / head / setting).glob("s*/results.json"))]
            if runs:
                print(row(head, setting, runs))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/federated_statistics"))
