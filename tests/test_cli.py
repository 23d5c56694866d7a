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
