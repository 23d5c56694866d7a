"""The sweep runner on a tiny sweep plan: real ``fedcl simulate`` processes, real files."""

import csv
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "simulations"))

import sweep  # noqa: E402

from fedcl.errors import ConfigError  # noqa: E402
from fedcl.sweep import read_plan  # noqa: E402

TINY_PLAN = """
preset = "fedsmoke"
base = ["federation.backend=inline", "data.max_train_per_class=20", "data.max_test_per_class=10",
        "federation.rounds_per_task=1", "federation.boundary_jitter=0", "federation.evaluate_clients=false",
        "federation.evaluate_every_round=false", 'federation.device_profiles=["server"]']
seeds = [0, 1]
[scenarios]
class_incremental = ["data.scenario=class_incremental"]
[partitions]
iid = ["federation.partition=iid"]
[methods.input_tuning]
overrides = []
[methods.ncm]
overrides = ["method.name=head_only", "model.head.name=ncm"]
"""


def test_tiny_sweep_produces_a_well_formed_table_and_figures(tmp_path, capsys):
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(TINY_PLAN)
    out = tmp_path / "bench"
    assert sweep.main(["--plan", str(plan_file), "--out", str(out), "--jobs", "2"]) == 0
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("input_tuning", "0"), ("input_tuning", "1"), ("ncm", "0"), ("ncm", "1")]
    for r in rows:
        assert 0 <= float(r["final_acc"]) <= 1 and float(r["total_mb"]) > 0 and float(r["peak_rss_mb"]) > 0
    table = (out / "summary.md").read_text().splitlines()
    assert table[0].startswith("| scenario | partition | method | final accuracy | avg. incremental accuracy | forgetting | BWT | MB exchanged")
    assert len(table) == 4 and all(" ± " in line for line in table[2:])
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert {s["method"] for s in summary} == {"input_tuning", "ncm"} and all(s["seeds"] == "2" for s in summary)
    # NCM exchanges class statistics, input tuning a perturbation and a linear head: both far below full FedAvg
    assert all(float(r["fraction_of_full_model"]) < 0.2 for r in rows)
    for name in ("accuracy_vs_mb_iid.png", "forgetting_iid.png", "accuracy_matrices_class_incremental.png"):
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the summary's spread is the sample std over seeds, in summary.csv and in the report beside the figures
    report = (out / "figures" / "report.md").read_text()
    for method in ("input_tuning", "ncm"):
        acc = [float(r["final_acc"]) for r in rows if r["method"] == method]
        row = next(s for s in summary if s["method"] == method)
        assert float(row["final_acc_std"]) == pytest.approx(statistics.stdev(acc))
        assert f"| class_incremental | iid | {method} | {statistics.mean(acc):.3f} ± {statistics.stdev(acc):.3f} |" in report
    # a second run resumes: every cell is cached, nothing re-runs
    capsys.readouterr()
    assert sweep.main(["--plan", str(plan_file), "--out", str(out)]) == 0
    assert "ok in" not in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    (TINY_PLAN.replace("seeds = [0, 1]", "seeds = []"), "'seeds' must be a non-empty list"),
    (TINY_PLAN.replace('overrides = []', 'overrides = ["train.lr=-1"]'), "cell input_tuning/class_incremental/iid/seed0: train.lr must be a finite number > 0"),
    (TINY_PLAN.replace("[partitions]", "[partition]"), "unknown key(s) partition"),
    (TINY_PLAN + '[methods.x]\noverrides = []\nscenarios = ["nope"]\n', "names 'nope', which is not in [scenarios]"),
])
def test_bad_plan_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_plan(path)
    assert message in str(info.value)
