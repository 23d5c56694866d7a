"""Results analysis shared by ``fedcl report``, the sweep runner and the notebooks: load ``results.json``
files into pandas and summarise over seeds (mean, sample standard deviation, 95 % t interval).
Figures: :mod:`fedcl.figures`. Needs the ``analysis`` extra (pandas)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: columns of :func:`load_runs` summarised over seeds by :func:`summarize_runs`
METRICS = {
    "final_acc": "final accuracy",
    "avg_inc_acc": "avg. incremental accuracy",
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
        "avg_inc_acc": results.get("avg_incremental_accuracy"),
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


def t_half_width(std: float, n: int, level: float = 0.95) -> float:
    """Half width of the ``level`` confidence interval of a mean: t_{(1+level)/2, n-1} * s / sqrt(n) (NaN for n < 2)."""
    from scipy.stats import t

    if n < 2 or not np.isfinite(std):
        return float("nan")
    return float(t.ppf((1 + level) / 2, n - 1) * std / np.sqrt(n))


def summarize_runs(runs: pd.DataFrame, group: list[str] | None = None) -> pd.DataFrame:
    """Per group (default scenario x partition x method), over seeds: the mean of every metric, its sample
    standard deviation (``_std``, ddof=1) and the half width of its 95 % t interval (``_ci95``); ``seeds`` counts runs."""
    group = group or GROUP
    present = [m for m in METRICS if m in runs and runs[m].notna().any()]
    grouped = runs.groupby(group, sort=False)[present]
    summary = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).join(grouped.size().rename("seeds"))
    for m in present:
        summary[f"{m}_ci95"] = [t_half_width(s, n) for s, n in zip(summary[f"{m}_std"], summary["seeds"])]
    return summary.reset_index()


def summary_markdown(summary: pd.DataFrame, digits: dict[str, int] | None = None, group: list[str] | None = None) -> str:
    """The summary as a Markdown table: ``mean ± std`` cells (sample std over seeds) and the 95 % t interval
    of the final accuracy."""
    group = group or GROUP
    digits = {"final_acc": 3, "avg_inc_acc": 3, "forgetting": 3, "bwt": 3, "total_mb": 2, "client_compute_s": 1, "peak_rss_mb": 0, **(digits or {})}
    present = [m for m in METRICS if m in summary]
    header = [*group, *(METRICS[m] for m in present), "final accuracy 95 % CI", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in summary.iterrows():
        cells = [str(r[c]) for c in group]
        for m in present:
            d = digits.get(m, 3)
            if pd.isna(r[m]):
                cells.append("-")
            else:
                cells.append(f"{r[m]:.{d}f} ± {r[m + '_std']:.{d}f}" if r["seeds"] > 1 else f"{r[m]:.{d}f}")
        half = r.get("final_acc_ci95", float("nan"))
        cells.append(f"[{r['final_acc'] - half:.3f}, {r['final_acc'] + half:.3f}]" if np.isfinite(half) else "-")
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


# ---------------------------------------------------------------------- grouping runs by setting
def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists as tuples, so values can be compared and hashed)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def setting_names(configs: list[dict[str, Any]], fallback: list[str]) -> list[str]:
    """A name per run for its setting: the settings that differ between the runs, apart from the seed, the
    scenario, the partition and how the run was executed (``key=value, ...``); ``fallback`` where none differ.
    Runs that differ only by seed get the same name."""
    from fedcl.federation.checkpoint import EXECUTION_KEYS

    ignored = {"seed", "data.scenario", "federation.partition", *EXECUTION_KEYS}
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f} - ignored)
    differing = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    names = []
    for f, default in zip(flat, fallback):
        parts = [f"{k.split('.', 1)[-1] if k.count('.') > 1 else k}={f.get(k)}" for k in differing]
        names.append(", ".join(parts) if parts else default)
    return names
