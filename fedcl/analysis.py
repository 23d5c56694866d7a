"""Results analysis shared by scripts and notebooks: load ``results.json`` files into pandas,
summarise over seeds, and plot the standard figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: columns of :func:`load_runs` summarised over seeds by :func:`summarize_runs`
METRICS = {
    "final_acc": "final accuracy",
    "forgetting": "forgetting",
    "bwt": "BWT",
    "total_mb": "MB exchanged",
    "client_compute_s": "client compute s",
    "peak_rss_mb": "peak memory MB",
}
GROUP = ["scenario", "partition", "method"]


def read_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return json.loads((path / "results.json" if path.is_dir() else path).read_text())


def run_row(results: dict[str, Any], labels: dict[str, Any] | None = None) -> dict[str, Any]:
    """One flat row of a run's headline figures."""
    comm = results.get("communication", {})
    row = {
        "method": "+".join([results["method"], *results.get("plugins", [])]),
        "scenario": results["scenario"],
        "partition": results.get("config", {}).get("federation", {}).get("partition", "-"),
        "seed": results.get("config", {}).get("seed", 0),
        "final_acc": results["final_avg_accuracy"],
        "forgetting": results["avg_forgetting"],
        "bwt": results["bwt"],
        "total_mb": comm.get("bytes_total", 0) / 1e6,
        "full_model_mb": comm.get("full_model_bytes_total", 0) / 1e6,
        "fraction_of_full_model": comm.get("fraction_of_full_model"),
        "client_compute_s": results.get("client_train_time_s"),
        "peak_rss_mb": results.get("peak_rss_mb"),
        "wall_s": results.get("wall_time_s"),
        "trainable_params": results.get("trainable_params"),
        "rounds": results.get("rounds"),
        "num_clients": results.get("num_clients"),
    }
    row.update(labels or {})
    return row


def load_runs(root: str | Path) -> pd.DataFrame:
    """Every ``results.json`` under ``root`` as one row (labels from a sibling ``cell.json`` when present)."""
    rows = []
    for path in sorted(Path(root).rglob("results.json")):
        labels_file = path.parent / "cell.json"
        labels = json.loads(labels_file.read_text()) if labels_file.exists() else None
        row = run_row(json.loads(path.read_text()), labels)
        row["path"] = str(path.parent)
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every metric, per scenario x partition x method."""
    present = [m for m in METRICS if m in runs]
    grouped = runs.groupby(GROUP, sort=False)[present]
    summary = grouped.mean().join(grouped.std(ddof=0).add_suffix("_std")).join(grouped.size().rename("seeds"))
    return summary.reset_index()


def summary_markdown(summary: pd.DataFrame, digits: dict[str, int] | None = None) -> str:
    """The summary as a Markdown table with ``mean ± std`` cells."""
    digits = {"final_acc": 3, "forgetting": 3, "bwt": 3, "total_mb": 2, "client_compute_s": 1, "peak_rss_mb": 0, **(digits or {})}
    present = [m for m in METRICS if m in summary]
    header = ["scenario", "partition", "method", *(METRICS[m] for m in present), "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in summary.iterrows():
        cells = [str(r[c]) for c in GROUP]
        for m in present:
            d = digits.get(m, 3)
            cells.append(f"{r[m]:.{d}f} ± {r[m + '_std']:.{d}f}" if r["seeds"] > 1 else f"{r[m]:.{d}f}")
        cells.append(str(int(r["seeds"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- per-run tables
def per_round_frame(results: dict[str, Any]) -> pd.DataFrame:
    """One row per round: bytes up/down, cumulative MB, mean accuracy and per-task accuracies."""
    rows = []
    cumulative = 0
    per_round = results["communication"]["per_round"]
    acc = results.get("accuracy_per_round", {})
    for r in per_round:
        cumulative += r["bytes_up"] + r["bytes_down"]
        tasks = acc.get(str(r["round"])) or []
        rows.append({"round": r["round"], "bytes_up": r["bytes_up"], "bytes_down": r["bytes_down"],
                     "cumulative_mb": cumulative / 1e6, "accuracy": float(np.mean(tasks)) if tasks else np.nan,
                     **{f"task_{t}": a for t, a in enumerate(tasks)}})
    return pd.DataFrame(rows)


def per_client_bytes(results: dict[str, Any]) -> pd.DataFrame:
    """Bytes up and down per client and round (long format)."""
    rows = []
    for r in results["communication"]["per_round"]:
        for direction in ("up", "down"):
            for client, n in r.get(f"per_client_{direction}", {}).items():
                rows.append({"round": r["round"], "client": int(client), "direction": direction, "bytes": n})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- figures
def plot_accuracy_vs_mb(summary: pd.DataFrame, partition: str | None = None):
    """Final accuracy against total MB exchanged, one point per method, one panel per scenario."""
    import matplotlib.pyplot as plt

    data = summary if partition is None else summary[summary["partition"] == partition]
    scenarios = list(dict.fromkeys(data["scenario"]))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        part = data[data["scenario"] == scenario]
        for _, r in part.iterrows():
            ax.errorbar(r["total_mb"], r["final_acc"], yerr=r.get("final_acc_std", 0), fmt="o", capsize=3)
            ax.annotate(r["method"], (r["total_mb"], r["final_acc"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("total MB exchanged (up + down, all clients, log scale)")
        ax.set_ylabel("final average accuracy")
        ax.set_title(f"{scenario}" + (f" · {partition}" if partition else ""))
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_forgetting(summary: pd.DataFrame, partition: str | None = None):
    """Average forgetting per method (bars, ± std over seeds), one panel per scenario."""
    import matplotlib.pyplot as plt

    data = summary if partition is None else summary[summary["partition"] == partition]
    scenarios = list(dict.fromkeys(data["scenario"]))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        part = data[data["scenario"] == scenario]
        ax.bar(part["method"], part["forgetting"], yerr=part.get("forgetting_std"), capsize=3, color="tab:red", alpha=0.7)
        ax.set_ylabel("average forgetting (accuracy points, 0-1)")
        ax.set_title(f"{scenario}" + (f" · {partition}" if partition else ""))
        ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    return fig


def plot_accuracy_matrices(matrices: dict[str, list[list[float]]], ncols: int = 4):
    """Heatmaps of accuracy matrices R[i][j] (row: after stream step i, i.e. after every client finished
    its i-th task; column: tested on task j)."""
    import matplotlib.pyplot as plt

    n = len(matrices)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 1, 3.2 * nrows), squeeze=False, constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (title, m) in zip(axes.flat, matrices.items()):
        m = np.asarray(m)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("tested on task")
        ax.set_ylabel("after stream step")
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="accuracy")
    return fig


def global_vs_local(results: dict[str, Any]) -> pd.DataFrame:
    """Per round: the server's accuracy over every task's test data (global) and the clients'
    mean accuracy on the tasks each has seen (local; rounds where clients evaluated)."""
    local = results.get("per_client", {}).get("accuracy_per_round", {})
    rows = []
    for r, accs in results.get("accuracy_per_round", {}).items():
        clients = local.get(r, {})
        rows.append({"round": int(r), "global_accuracy": float(np.mean(accs)),
                     "mean_local_accuracy": float(np.mean(list(clients.values()))) if clients else np.nan})
    return pd.DataFrame(rows).sort_values("round").reset_index(drop=True)


def client_accuracy_frame(results: dict[str, Any]) -> pd.DataFrame:
    """Local accuracy per client and round (long format)."""
    rows = [{"round": int(r), "client": int(c), "accuracy": a}
            for r, accs in results.get("per_client", {}).get("accuracy_per_round", {}).items() for c, a in accs.items()]
    return pd.DataFrame(rows, columns=["round", "client", "accuracy"])


def plot_bytes_per_client(results: dict[str, Any]):
    """Bytes up and down per client in each round (one line per client)."""
    import matplotlib.pyplot as plt

    frame = per_client_bytes(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, direction in zip(axes, ("down", "up")):
        part = frame[frame["direction"] == direction].pivot(index="round", columns="client", values="bytes") / 1e3
        for client in part.columns:
            ax.plot(part.index, part[client], marker="o", ms=3, label=f"client {client}")
        ax.set_title(f"{'server → client' if direction == 'down' else 'client → server'} ({direction})")
        ax.set_xlabel("round")
        ax.set_ylabel("kB per client")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_cumulative_mb(curves: dict[str, pd.DataFrame], crossover: float | None = None):
    """Global accuracy after each evaluated round against cumulative MB exchanged, one line per run."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, frame in curves.items():
        frame = frame.dropna(subset=["accuracy"])
        ax.plot(frame["cumulative_mb"], frame["accuracy"], marker="o", ms=3, label=name)
    if crossover is not None:
        ax.axvline(crossover, color="grey", ls="--", label=f"crossover {crossover:.1f} MB")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative MB exchanged (up + down, all clients, log scale)")
    ax.set_ylabel("global accuracy (mean over tasks)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_task_accuracy_over_rounds(results: dict[str, Any], title: str = ""):
    """Accuracy on each task's test data after every round; dashed lines: rounds after which every
    client has finished a task; shaded: rounds where clients' boundaries differ (asynchronous)."""
    import matplotlib.pyplot as plt

    frame = per_round_frame(results).dropna(subset=["accuracy"])
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for col in [c for c in frame.columns if c.startswith("task_")]:
        ax.plot(frame["round"], frame[col], marker="o", ms=3, label=col.replace("_", " "))
    starts = [s["starts"] for s in results["per_client"]["task_schedule"].values()]
    for k in range(1, len(starts[0])):
        lo, hi = min(s[k] for s in starts), max(s[k] for s in starts)
        if hi > lo:
            ax.axvspan(lo - 0.5, hi - 0.5, color="grey", alpha=0.15)
    for b in results["task_boundary_rounds"][:-1]:
        ax.axvline(b + 0.5, color="black", ls="--", lw=0.8)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title or "per-task accuracy of the global model")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_client_curves(results: dict[str, Any]):
    """Each client's local accuracy over rounds; markers where that client switched task."""
    import matplotlib.pyplot as plt

    frame = client_accuracy_frame(results)
    schedule = results["per_client"]["task_schedule"]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for client, part in frame.groupby("client"):
        line, = ax.plot(part["round"], part["accuracy"], marker=".", label=f"client {client}")
        for start in schedule[str(client)]["starts"][1:]:
            ax.axvline(start - 0.5, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("round")
    ax.set_ylabel("local accuracy (tasks the client has seen)")
    ax.set_ylim(0, 1)
    ax.set_title("per-client accuracy; dotted: that client's task boundaries")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
