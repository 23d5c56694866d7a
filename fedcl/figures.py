"""Every figure fedcl draws, used by ``fedcl report``, the sweep runner and the notebooks.

Labels never cover one another: series are told apart by a legend placed outside the plotting area
(never by text placed next to points), and several panels share one legend. :func:`overlapping_labels`
checks a drawn figure. Needs the ``analysis`` extra (matplotlib, pandas).
"""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fedcl.analysis import client_accuracy_frame, global_vs_local, per_client_bytes, per_round_frame

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def series_style(index: int) -> dict[str, Any]:
    """Colour and marker of the ``index``-th series: unique pairs for the first 40 series."""
    return {"color": plt.get_cmap("tab10")(index % 10), "marker": MARKERS[index % len(MARKERS)]}


def _legend_outside(fig: Figure, handles=None, labels=None, title: str | None = None) -> None:
    """One legend for the whole figure, right of every panel (constrained layout makes room for it)."""
    if handles is None:
        handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title=title, title_fontsize=8)


def _rounds_axis(ax) -> None:
    """Rounds are whole numbers: integer ticks only."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")


# ---------------------------------------------------------------------- label check
def _label_artists(fig: Figure) -> list[tuple[str, Any]]:
    artists: list[tuple[str, Any]] = [(f"figure text {t.get_text()!r}", t) for t in fig.texts if t.get_text()]
    artists += [(f"figure legend {i}", leg) for i, leg in enumerate(fig.legends)]
    for n, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison and not ax.texts:
            continue
        named = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        named += _drawn_tick_labels(ax)
        artists += [(f"axes {n} text {t.get_text()!r}", t) for t in named if t.get_text()]
        if ax.get_legend() is not None:
            artists.append((f"axes {n} legend", ax.get_legend()))
    return artists


def _drawn_tick_labels(ax) -> list[Any]:
    """The tick labels inside the axes' view limits (matplotlib draws only those)."""
    drawn = []
    for labels, (lo, hi), index in ((ax.get_xticklabels() + ax.get_xticklabels(minor=True), sorted(ax.get_xlim()), 0),
                                    (ax.get_yticklabels() + ax.get_yticklabels(minor=True), sorted(ax.get_ylim()), 1)):
        drawn += [t for t in labels if t.get_visible() and lo - 1e-9 * abs(hi - lo) <= t.get_position()[index] <= hi + 1e-9 * abs(hi - lo)]
    return drawn


def overlapping_labels(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of texts or legends of ``fig`` whose drawn boxes overlap (after a draw of the canvas)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(name, artist.get_window_extent(renderer)) for name, artist in _label_artists(fig)]
    return [(a, b) for (a, box_a), (b, box_b) in combinations(boxes, 2)
            if box_a.width > 0 and box_b.width > 0 and box_a.overlaps(box_b)]


# ---------------------------------------------------------------------- one run
def plot_accuracy_matrix(matrix: list[list[float]], title: str = "accuracy matrix", ax=None) -> Figure:
    """Heatmap of R[i][j]: accuracy on task j (column) after stream step i (row)."""
    m = np.asarray(matrix, dtype=float)
    fig = ax.figure if ax is not None else plt.figure(figsize=(1.0 + 0.7 * m.shape[1], 1.0 + 0.6 * m.shape[0]), layout="constrained")
    ax = ax if ax is not None else fig.add_subplot()
    image = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    size = 8 if m.shape[1] <= 6 else 6 if m.shape[1] <= 10 else 0
    for (i, j), v in np.ndenumerate(m):
        if size:
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=size, color="white" if v < 0.6 else "black")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("tested on task")
    ax.set_ylabel("after stream step")
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    if len(fig.axes) == 1:
        fig.colorbar(image, ax=ax, shrink=0.8, label="accuracy")
    return fig


def plot_accuracy_matrices(matrices: dict[str, list[list[float]]], ncols: int = 4) -> Figure:
    """Small multiples of :func:`plot_accuracy_matrix`, one per run, one shared colour bar."""
    n = len(matrices)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 1, 3.4 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (title, m) in zip(axes.flat, matrices.items()):
        plot_accuracy_matrix(m, title, ax)
    fig.colorbar(axes.flat[0].images[0], ax=axes.ravel().tolist(), shrink=0.8, label="accuracy")
    return fig


def _draw_task_bars(ax, schedule: dict[str, dict], rounds: int) -> None:
    """One row per client: which task it learns in each round (colour and number), from its task schedule."""
    for row, (client, s) in enumerate(sorted(schedule.items(), key=lambda kv: int(kv[0]))):
        ends = [*s["starts"][1:], rounds + 1]
        for task, start, end in zip(s["order"], s["starts"], ends):
            ax.broken_barh([(start - 0.5, end - start)], (row - 0.4, 0.8), color=series_style(task)["color"], alpha=0.55)
            if end - start >= 1:
                ax.text((start + end - 1) / 2, row, str(task), ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(schedule)), [f"client {c}" for c in sorted(schedule, key=int)], fontsize=7)
    ax.set_ylim(len(schedule) - 0.5, -0.5)


def plot_task_accuracy_over_rounds(results: dict[str, Any], title: str = "") -> Figure:
    """Top: accuracy of the global model on each task's test data after every evaluated round; dashed: the
    rounds after which every client finished a task (the accuracy matrix's rows). Bottom: each client's task
    per round, so its own task boundaries."""
    frame = per_round_frame(results).dropna(subset=["accuracy"])
    rounds = int(results["rounds"])
    schedule = results["per_client"]["task_schedule"]
    fig, (ax, bars) = plt.subplots(2, 1, sharex=True, figsize=(8, 3.2 + 0.25 * len(schedule)), layout="constrained",
                                   gridspec_kw={"height_ratios": [3, max(1.0, 0.25 * len(schedule))]})
    for col in [c for c in frame.columns if c.startswith("task_")]:
        t = int(col.split("_")[1])
        ax.plot(frame["round"], frame[col], ms=4, label=f"task {t}", **series_style(t))
    for b in results.get("task_boundary_rounds", [])[:-1]:
        ax.axvline(b + 0.5, color="black", ls="--", lw=0.8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title or "per-task accuracy of the global model (dashed: every client finished a task)", fontsize=9)
    _draw_task_bars(bars, schedule, rounds)
    _rounds_axis(bars)
    bars.set_title("each client's task (number) per round", fontsize=8)
    _legend_outside(fig)
    return fig


def plot_bytes_per_round(results: dict[str, Any]) -> Figure:
    """MB per round up, down and both, against full-model FedAvg (the whole backbone and head both ways)."""
    c = results["communication"]
    frame = pd.DataFrame([{"round": r["round"], "up": r["bytes_up"] / 1e6, "down": r["bytes_down"] / 1e6} for r in c["per_round"]])
    # full-model FedAvg has no counterpart of the statistics' collect step (round R+1): NaN there, no point drawn
    reference = dict(enumerate(c["full_model_bytes_per_round"], start=1))
    full = np.asarray([reference.get(r, np.nan) for r in frame["round"]], dtype=float) / 1e6
    fig, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
    ax.plot(frame["round"], frame["down"], label="down (server → clients)", **series_style(0))
    ax.plot(frame["round"], frame["up"], ls=":", ms=4, label="up (clients → server)", **series_style(1))
    ax.plot(frame["round"], frame["up"] + frame["down"], label="up + down", **series_style(2))
    ax.plot(frame["round"], full, ls="--", label="full-model FedAvg, up + down", **series_style(3))
    ax.set_yscale("log")
    _rounds_axis(ax)
    ax.set_ylabel("MB per round (all clients, log scale)")
    fraction = c.get("fraction_of_full_model")
    ax.set_title("bytes per round" + (f": {100 * fraction:.2f} % of full-model FedAvg in total" if fraction else ""), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(fig)
    return fig


_CLIENT_ROUND = (re.compile(r"round (\d+) client (\d+)"), re.compile(r"client (\d+) \(round (\d+)\)"))


def faulty_updates(results: dict[str, Any]) -> list[dict[str, Any]]:
    """``rejected_updates`` as rows (round, client, kind: failed or rejected) where the text names both."""
    rows = []
    for text in results.get("rejected_updates") or []:
        if m := _CLIENT_ROUND[0].search(text):
            rnd, client = int(m.group(1)), int(m.group(2))
        elif m := _CLIENT_ROUND[1].search(text):
            client, rnd = int(m.group(1)), int(m.group(2))
        else:
            continue
        rows.append({"round": rnd, "client": client, "kind": "failed" if "client error" in text else "rejected"})
    return rows


def plot_client_timeline(results: dict[str, Any], unavailable: dict[int, list[int]] | None = None) -> Figure:
    """Per client and round: the task it learned (colour, from the replies), rounds without a reply,
    rounds it was unavailable (``unavailable``: client -> rounds), rejected and failed updates; below, the
    round's counts of unavailable, failed, timed-out and rejected clients."""
    per_round = results["communication"]["per_round"]
    clients = sorted(int(c) for c in results["per_client"]["task_schedule"])
    fig, (ax, counts) = plt.subplots(2, 1, sharex=True, figsize=(8, 2.6 + 0.3 * len(clients)), layout="constrained",
                                     gridspec_kw={"height_ratios": [max(1.5, 0.35 * len(clients)), 1.0]})
    seen_tasks: set[int] = set()
    for r in per_round:
        for client, task in r.get("per_client_task", {}).items():
            ax.broken_barh([(r["round"] - 0.5, 1)], (clients.index(int(client)) - 0.4, 0.8), color=series_style(task)["color"], alpha=0.6)
            seen_tasks.add(task)
    handles = [Patch(color=series_style(t)["color"], alpha=0.6, label=f"task {t}") for t in sorted(seen_tasks)]
    marks = {"unavailable": ("o", "none", "black"), "rejected": ("x", "red", "red"), "failed": ("X", "black", "black")}
    points: dict[str, list[tuple[int, int]]] = {k: [] for k in marks}
    for client, rounds in (unavailable or {}).items():
        points["unavailable"] += [(rnd, client) for rnd in rounds]
    for row in faulty_updates(results):
        points[row["kind"]].append((row["round"], row["client"]))
    for kind, pts in points.items():
        if pts:
            marker, face, edge = marks[kind]
            handles.append(ax.scatter([p[0] for p in pts], [clients.index(p[1]) for p in pts], marker=marker, s=40,
                                      facecolors=face, edgecolors=edge, label=f"{kind} update" if kind != "unavailable" else kind))
    ax.set_yticks(range(len(clients)), [f"client {c}" for c in clients], fontsize=7)
    ax.set_ylim(len(clients) - 0.5, -0.5)
    ax.set_title("each client's task per round (blank: no reply)", fontsize=9)
    _draw_round_counts(counts, per_round)
    _rounds_axis(counts)
    counts.set_title("clients that did not contribute, per round", fontsize=8)
    handles += counts.get_legend_handles_labels()[0]
    _legend_outside(fig, handles, [h.get_label() for h in handles])
    return fig


def _draw_round_counts(ax, per_round: list[dict[str, Any]]) -> None:
    from matplotlib.ticker import MaxNLocator

    rounds = np.array([r["round"] for r in per_round])
    bottom = np.zeros(len(rounds))
    for i, key in enumerate(("clients_unavailable", "clients_failed", "clients_timed_out", "clients_rejected")):
        values = np.array([r.get(key, 0) or 0 for r in per_round], dtype=float)
        ax.bar(rounds, values, bottom=bottom, color=plt.get_cmap("Set2")(i), label=key.replace("clients_", "clients ").replace("_", " "))
        bottom += values
    ax.set_ylabel("clients", fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(1.0, bottom.max()) * 1.1)
    ax.grid(axis="y", alpha=0.3)


def plot_bytes_per_client(results: dict[str, Any]) -> Figure:
    """Bytes up and down per client in each round (one line per client)."""
    frame = per_client_bytes(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True, layout="constrained")
    for ax, direction in zip(axes, ("down", "up")):
        part = frame[frame["direction"] == direction].pivot(index="round", columns="client", values="bytes") / 1e3
        for i, client in enumerate(part.columns):
            ax.plot(part.index, part[client], ms=3, label=f"client {client}", **series_style(i))
        ax.set_title(f"{'server → client' if direction == 'down' else 'client → server'} ({direction})")
        _rounds_axis(ax)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("kB per client")
    _legend_outside(fig)
    return fig


def plot_client_curves(results: dict[str, Any]) -> Figure:
    """Each client's local accuracy over rounds; dotted: that client's task boundaries."""
    frame = client_accuracy_frame(results)
    schedule = results["per_client"]["task_schedule"]
    fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
    for i, (client, part) in enumerate(frame.groupby("client")):
        style = series_style(i)
        ax.plot(part["round"], part["accuracy"], ms=4, label=f"client {client}", **style)
        for start in schedule[str(client)]["starts"][1:]:
            ax.axvline(start - 0.5, color=style["color"], ls=":", lw=1)
    _rounds_axis(ax)
    ax.set_ylabel("local accuracy (tasks the client has seen)")
    ax.set_ylim(0, 1)
    ax.set_title("per-client accuracy; dotted: that client's task boundaries", fontsize=9)
    _legend_outside(fig)
    return fig


def plot_global_vs_local(runs: dict[str, dict[str, Any]]) -> Figure:
    """Per run: global accuracy (every task) and the clients' mean local accuracy (tasks each has seen)."""
    fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
    for i, (name, results) in enumerate(runs.items()):
        gl = global_vs_local(results)
        style = series_style(i)
        ax.plot(gl["round"], gl["global_accuracy"], label=f"{name}: global", **style)
        ax.plot(gl["round"], gl["mean_local_accuracy"], ls="--", label=f"{name}: mean local", color=style["color"])
    _rounds_axis(ax)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title("global (all tasks) vs mean local (tasks each client has seen)", fontsize=9)
    _legend_outside(fig)
    return fig


# ---------------------------------------------------------------------- several runs
def _log_x(ax, values) -> None:
    """A log x axis whose tick labels stay apart: plain numbers, and over less than a decade a few chosen
    ticks instead of matplotlib's crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    lo, hi = float(np.min(values)), float(np.max(values))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    if lo > 0 and hi / lo < 10:
        pad = (hi / lo) ** 0.15 if hi > lo else 1.2
        ax.set_xlim(lo / pad, hi * pad)
        ends = np.geomspace(lo, hi, 3) if hi / lo >= 2 else [lo, hi]
        ax.set_xticks(sorted({float(f"{v:.3g}") for v in ends}))


def plot_accuracy_vs_mb(summary: pd.DataFrame, partition: str | None = None, label: str = "method",
                        panel: str | None = "scenario") -> Figure:
    """Final accuracy against total MB exchanged, one marker per ``label`` (error bars: sample std over seeds),
    one panel per ``panel`` value; one shared legend outside the panels."""
    data = summary if partition is None else summary[summary["partition"] == partition]
    names = list(dict.fromkeys(data[label]))
    panels = list(dict.fromkeys(data[panel])) if panel else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.2, 4), squeeze=False, layout="constrained")
    handles = {}
    for ax, value in zip(axes[0], panels):
        part = data if value is None else data[data[panel] == value]
        for _, r in part.iterrows():
            std = r.get("final_acc_std", 0.0)
            handles[r[label]] = ax.errorbar(r["total_mb"], r["final_acc"], yerr=0.0 if pd.isna(std) else std, ls="none",
                                            capsize=3, ms=6, label=r[label], **series_style(names.index(r[label])))
        _log_x(ax, part["total_mb"])
        ax.set_xlabel("total MB exchanged (log scale)")
        ax.set_title(" · ".join(str(v) for v in (value, partition) if v), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("final average accuracy (± sample std)")
    ordered = [n for n in names if n in handles]
    _legend_outside(fig, [handles[n] for n in ordered], ordered, title=label)
    return fig


def plot_forgetting(summary: pd.DataFrame, partition: str | None = None, label: str = "method", panel: str = "scenario") -> Figure:
    """Average forgetting per ``label`` (horizontal bars, ± sample std over seeds), one panel per ``panel`` value."""
    from matplotlib.ticker import MaxNLocator

    data = summary if partition is None else summary[summary["partition"] == partition]
    panels = list(dict.fromkeys(data[panel]))
    rows = max(len(data[data[panel] == p]) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5, 1.2 + 0.28 * rows), squeeze=False, layout="constrained")
    for ax, value in zip(axes[0], panels):
        part = data[data[panel] == value]
        ax.barh(part[label], part["forgetting"], xerr=part.get("forgetting_std"), capsize=3, color="tab:red", alpha=0.7)
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_xlabel("average forgetting (0-1)")
        ax.set_title(" · ".join(str(v) for v in (value, partition) if v), fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    return fig


def plot_accuracy_vs_cumulative_mb(curves: dict[str, pd.DataFrame], crossover: float | None = None) -> Figure:
    """Global accuracy after each evaluated round against cumulative MB exchanged, one line per run."""
    fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
    for i, (name, frame) in enumerate(curves.items()):
        frame = frame.dropna(subset=["accuracy"])
        ax.plot(frame["cumulative_mb"], frame["accuracy"], ms=3, label=name, **series_style(i))
    if crossover is not None:
        ax.axvline(crossover, color="grey", ls="--", label=f"crossover {crossover:.1f} MB")
    _log_x(ax, pd.concat([f["cumulative_mb"] for f in curves.values()]))
    ax.set_xlabel("cumulative MB exchanged (up + down, all clients, log scale)")
    ax.set_ylabel("global accuracy (mean over tasks)")
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(fig)
    return fig
