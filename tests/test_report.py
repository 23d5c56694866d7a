"""``fedcl report``, the figures, the progress bar and experiment tracking, on the output of real small runs
(``fedcl simulate`` on the inline backend and ``fedcl train``, each a real subprocess)."""

import json
import os
import re
import shutil
import subprocess
import sys

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from fedcl import figures
from fedcl.analysis import summarize_runs
from fedcl.cli import main
from helpers import set_args

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
TINY = ["data.max_train_per_class=20", "data.max_test_per_class=10"]


def fedcl(*args):
    return subprocess.run([sys.executable, "-m", "fedcl", *args], capture_output=True, text=True, check=False, env=ENV, timeout=900)


#: each option's semantics are tested in process; here they pass through the command line together
COMMON_OPTIONS = ["federation.quantization=int8", "federation.strategy=fedprox", "federation.task_order=per_client", "federation.partition=shard"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny federated run (with a TensorBoard log and the options users set most: int8 updates, FedProx, a
    per-client task order, label shards) and a tiny single-device run of the smoke preset; their console output."""
    root = tmp_path_factory.mktemp("runs")
    fed = fedcl("simulate", "-p", "fedsmoke", "-o", str(root / "fed"), "--log", "tensorboard",
                *set_args([*TINY, "seed=3", "federation.backend=inline", 'federation.device_profiles=["phone"]', *COMMON_OPTIONS]))
    assert fed.returncode == 0, fed.stderr[-3000:]
    single = fedcl("train", "-p", "smoke", "-o", str(root / "single"), *set_args([*TINY, "train.epochs=1"]))
    assert single.returncode == 0, single.stderr[-3000:]
    return {"root": root, "fed": fed, "single": single}


def results_of(folder):
    return json.loads((folder / "results.json").read_text())


def table_rows(markdown, first_cell):
    """Cells of the Markdown table rows whose first cell is ``first_cell``."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith(f"| {first_cell} |")]


# ---------------------------------------------------------------------- legible labels
def crowded_summary():
    methods = ["input_tuning", "input_tuning_border", "ewc", "lwf", "fedprox", "replay", "head_only", "input_tuning_per_task"]
    return pd.DataFrame([{"scenario": s, "partition": "iid", "method": m, "final_acc": 0.94 + 0.001 * i, "final_acc_std": 0.01,
                          "total_mb": 6.0 + 0.02 * i, "forgetting": 0.01, "forgetting_std": 0.003}
                         for s in ("class_incremental", "task_incremental") for i, m in enumerate(methods)])


def test_crowded_accuracy_vs_mb_keeps_every_label_apart():
    """Eight methods with near-identical accuracy and MB (as in docs/figures/benchmark_cpu): no text or legend
    box overlaps another, and every method is named once."""
    fig = figures.plot_accuracy_vs_mb(crowded_summary(), "iid")
    assert figures.overlapping_labels(fig) == []
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == list(dict.fromkeys(crowded_summary()["method"]))
    forgetting = figures.plot_forgetting(crowded_summary(), "iid")
    assert figures.overlapping_labels(forgetting) == []


def test_label_check_sees_labels_placed_next_to_points():
    """The check itself: names written beside near-identical points (the old placement) overlap."""
    fig = figures.plot_accuracy_vs_mb(crowded_summary(), "iid")
    ax = fig.axes[0]
    for i, (_, r) in enumerate(crowded_summary().iterrows()):
        ax.annotate(r["method"], (r["total_mb"], r["final_acc"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    assert len(figures.overlapping_labels(fig)) > 5


# ---------------------------------------------------------------------- statistics over seeds
def test_summary_uses_sample_std_and_a_t_interval():
    from scipy.stats import t

    frame = pd.DataFrame({"scenario": "s", "partition": "iid", "method": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1],
                          "final_acc": [0.5, 0.6, 0.8, 0.3, 0.4], "total_mb": 1.0})
    summary = summarize_runs(frame).set_index("method")
    a = np.array([0.5, 0.6, 0.8])
    assert summary.loc["a", "final_acc_std"] == pytest.approx(a.std(ddof=1))
    assert summary.loc["a", "final_acc_ci95"] == pytest.approx(t.ppf(0.975, 2) * a.std(ddof=1) / np.sqrt(3))
    assert summary.loc["b", "final_acc_std"] == pytest.approx(np.std([0.3, 0.4], ddof=1))
    assert summary.loc["b", "seeds"] == 2


# ---------------------------------------------------------------------- real runs
def test_report_numbers_match_results_and_figures_exist(runs, tmp_path):
    root = runs["root"]
    assert main(["report", str(root / "fed"), str(root / "single"), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    for name in ("fed", "single"):
        r = results_of(root / name)
        row = table_rows(text, name)[0]
        assert row[4:7] == [f"{r[k]:.3f}" for k in ("final_avg_accuracy", "avg_forgetting", "bwt")]
    fed = results_of(root / "fed")
    row = table_rows(text, "fed")[0]
    assert row[7:10] == [f"{fed['communication']['bytes_up'] / 1e6:.3f}", f"{fed['communication']['bytes_down'] / 1e6:.3f}",
                         f"{100 * fed['communication']['fraction_of_full_model']:.2f}"]
    section = text[text.index("## fed"):text.index("## single")]
    matrix = [[float(v) for v in cells[1:]] for cells in table_rows(section, "0") + table_rows(section, "1")]
    assert np.allclose(matrix, fed["accuracy_matrix"], atol=5e-4)
    for png in ("run0_accuracy_matrix", "run0_task_accuracy", "run0_bytes_per_round", "run0_client_timeline", "run1_accuracy_matrix"):
        assert (tmp_path / "rep" / f"{png}.png").read_bytes()[:4] == b"\x89PNG", png
        assert f"]({png}.png)" in text
    assert "run1_task_accuracy" not in text and "Single-device run: no rounds" in text


def test_every_figure_of_a_real_run_keeps_its_labels_apart(runs):
    from fedcl.report import unavailable_rounds

    r = results_of(runs["root"] / "fed")
    unavailable = unavailable_rounds(r)
    assert unavailable and sum(len(v) for v in unavailable.values()) == sum(x["clients_unavailable"] for x in r["communication"]["per_round"])
    for fig in (figures.plot_accuracy_matrix(r["accuracy_matrix"]), figures.plot_task_accuracy_over_rounds(r),
                figures.plot_bytes_per_round(r), figures.plot_client_timeline(r, unavailable), figures.plot_bytes_per_client(r)):
        assert figures.overlapping_labels(fig) == [], fig.axes[0].get_title()


def test_a_federated_run_through_the_command_line_applies_its_options(runs):
    r = results_of(runs["root"] / "fed")
    assert r["mode"] == "federated" and r["communication"]["quantization"] == "int8" and r["rejected_updates"] == []
    assert (r["config"]["federation"]["strategy"], r["config"]["federation"]["partition"]) == ("fedprox", "shard")
    orders = {tuple(v["order"]) for v in r["per_client"]["task_schedule"].values()}
    assert all(sorted(o) == [0, 1] for o in orders) and len(orders) > 1  # every client sees both tasks, not all in one order
    assert r["final_avg_accuracy"] > 0.4  # 4 classes: chance is 0.25


def test_progress_bar_and_results_tables(runs):
    fed, single = runs["fed"], runs["single"]
    assert re.search(r"rounds .*4/4 accuracy 0\.\d{3}", fed.stdout), fed.stdout[-2000:]
    assert "[ROUND" not in fed.stdout + fed.stderr  # Flower's log lines only with -v
    assert "fedcl federated results" in fed.stdout
    assert "fedcl results" in single.stdout  # (a run with -q prints one line: tests/test_dependencies.py)


def test_a_single_device_run_through_the_command_line(runs):
    r = results_of(runs["root"] / "single")
    for key in ("config", "method", "scenario", "num_tasks", "accuracy_matrix", "final_avg_accuracy", "avg_forgetting",
                "bwt", "trainable_params", "backbone_params", "wall_time_s"):
        assert key in r
    assert r["num_tasks"] == 3 and len(r["accuracy_matrix"]) == 3
    chance = 1 / 6  # class-incremental over 3 tasks x 2 classes
    assert r["final_avg_accuracy"] > 2 * chance
    assert r["backbone_params"] > 100 * r["trainable_params"] > 0


def test_tensorboard_events_read_back_equal_results(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = results_of(runs["root"] / "fed")
    events = EventAccumulator(str(runs["root"] / "fed" / "tensorboard"))
    events.Reload()

    def values(tag):
        return {e.step: e.value for e in events.Scalars(tag)}

    for task in range(r["num_tasks"]):
        assert values(f"accuracy/task_{task}") == {int(k): np.float32(v[task]) for k, v in r["accuracy_per_round"].items()}
    per_round = r["communication"]["per_round"]
    assert values("bytes/up") == {x["round"]: np.float32(x["bytes_up"]) for x in per_round}
    assert values("bytes/down") == {x["round"]: np.float32(x["bytes_down"]) for x in per_round}
    assert values("loss/train") == {x["round"]: np.float32(x["train_loss"]) for x in per_round if x["train_loss"] is not None}
    assert values("final/final_avg_accuracy") == {0: np.float32(r["final_avg_accuracy"])}


# ---------------------------------------------------------------------- bad input
def test_missing_fields_skip_their_figure_with_a_note(runs, tmp_path):
    r = results_of(runs["root"] / "fed")
    del r["per_client"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(r))
    assert main(["report", str(tmp_path / "run")]) == 0
    text = (tmp_path / "run" / "report" / "report.md").read_text()
    assert text.count("skipped, results.json has no `per_client.task_schedule`") == 2
    assert (tmp_path / "run" / "report" / "run0_bytes_per_round.png").exists()


@pytest.mark.parametrize("content, needle", [
    ("{not json", "cannot read"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"method": "m", "scenario": "s", "final_avg_accuracy": "high", "avg_forgetting": 0, "bwt": 0}), "'final_avg_accuracy' is 'high'"),
    (json.dumps({"method": "m", "scenario": "s", "final_avg_accuracy": 0.5, "avg_forgetting": 0, "bwt": 0, "accuracy_matrix": "x"}),
     "'accuracy_matrix' is not a list of equally long rows"),
    (json.dumps({"method": "m", "scenario": "s", "final_avg_accuracy": 0.5, "avg_forgetting": 0, "bwt": 0, "mode": "federated",
                 "rounds": 1, "communication": {"per_round": [{"round": 1}], "full_model_bytes_per_round": [1]}}),
     "cannot draw MB per round"),
])
def test_malformed_results_is_one_error_line(tmp_path, content, needle):
    (tmp_path / "results.json").write_text(content)
    proc = fedcl("report", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("fedcl: error: "), proc.stderr
    assert needle in proc.stderr


def test_missing_extras_name_what_to_install(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(runs["root"] / "fed"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("fedcl: error: fedcl report needs matplotlib; install the analysis extra: "
                                       "pip install 'fedcl[analysis]'\n")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert main(["train", "-p", "smoke", "--log", "tensorboard", "-o", str(tmp_path / "never")]) == 2
    assert "install the tracking extra: pip install 'fedcl[tracking]'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_sweep_folder_report_groups_seeds(runs, tmp_path):
    """Two copies of the federated run as two seeds of one cell, beside a single run of another cell."""
    partition = results_of(runs["root"] / "fed")["config"]["federation"]["partition"]
    for cell, seeds in (("a", (0, 1)), ("b", (0,))):
        for seed in seeds:
            folder = tmp_path / "sweep" / cell / f"seed{seed}"
            shutil.copytree(runs["root"] / "fed", folder)
            r = results_of(folder)
            r["final_avg_accuracy"] += 0.1 * seed
            r["config"]["seed"] = seed
            (folder / "results.json").write_text(json.dumps(r))
            (folder / "cell.json").write_text(json.dumps({"method": cell, "scenario": r["scenario"], "partition": partition, "seed": seed}))
    assert main(["report", str(tmp_path / "sweep")]) == 0
    text = (tmp_path / "sweep" / "report" / "report.md").read_text()
    acc = [results_of(tmp_path / "sweep" / "a" / f"seed{s}")["final_avg_accuracy"] for s in (0, 1)]
    row = next(line for line in text.splitlines() if line.startswith(f"| {results_of(runs['root'] / 'fed')['scenario']} | {partition} | a |"))
    assert f"{np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f}" in row and row.endswith("| 2 |")
    assert (tmp_path / "sweep" / "report" / f"accuracy_vs_mb_{partition}.png").exists()


def test_benchmark_figures_redrawn_from_the_docs_table_keep_labels_apart():
    """The committed benchmark runs (9 methods, several near-identical): every redrawn figure is legible."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "simulations"))
    from redraw_benchmark_figures import read_summary

    summary = read_summary(Path(__file__).resolve().parents[1] / "docs" / "benchmark_cpu_runs.csv")
    assert len(summary) == 111 and (summary["seeds"] == 3).all() and summary["final_acc_std"].notna().all()
    for partition in dict.fromkeys(summary["partition"]):
        assert figures.overlapping_labels(figures.plot_accuracy_vs_mb(summary, partition)) == []
        assert figures.overlapping_labels(figures.plot_forgetting(summary, partition)) == []
