"""End to end through the real command line (a subprocess, as a user runs it)."""

import json
import os
import subprocess
import sys



ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def fedcl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fedcl", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=900)


def test_smoke_preset_end_to_end(tmp_path):
    out = tmp_path / "smoke"
    proc = fedcl("train", "--preset", "smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "results.json").read_text())
    for key in ("config", "method", "scenario", "num_tasks", "accuracy_matrix", "final_avg_accuracy", "avg_forgetting",
                "bwt", "trainable_params", "backbone_params", "wall_time_s"):
        assert key in r
    assert r["num_tasks"] == 3 and len(r["accuracy_matrix"]) == 3
    chance = 1 / 6  # class-incremental over 3 tasks x 2 classes
    assert r["final_avg_accuracy"] > 2 * chance
    assert r["backbone_params"] > 100 * r["trainable_params"] > 0
    assert "fedcl results" in proc.stdout


def test_list():
    proc = fedcl("list")
    assert proc.returncode == 0 and "efficientnet_lite0" in proc.stdout and "residual_conv" in proc.stdout


def test_simulate_end_to_end(tmp_path):
    """One run through the command line with the options a user sets most: int8 updates, FedProx, a per-client
    task order and label shards (each option's semantics are tested in process; the command line is under test here)."""
    out = tmp_path / "fed"
    # in-process backend: Ray through the command line is in test_reliability
    proc = fedcl("simulate", "--preset", "fedsmoke", "--out", str(out), "--set", "federation.quantization=int8",
                 "--set", "federation.strategy=fedprox", "--set", "federation.task_order=per_client", "--set", "federation.partition=shard",
                 "--set", "federation.backend=inline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["mode"] == "federated" and r["communication"]["quantization"] == "int8"
    assert r["rejected_updates"] == [] and r["config"]["federation"]["strategy"] == "fedprox"
    assert r["config"]["federation"]["partition"] == "shard"
    orders = {tuple(v["order"]) for v in r["per_client"]["task_schedule"].values()}
    assert all(sorted(o) == [0, 1] for o in orders) and len(orders) > 1  # every client sees both tasks, not all in one order
    assert r["final_avg_accuracy"] > 0.4
    assert "fedcl federated results" in proc.stdout
