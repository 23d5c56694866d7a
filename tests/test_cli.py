"""End to end through the real command line (a subprocess, as a user runs it)."""

import json
import os
import subprocess
import sys

import pytest

from fedcl.data.idx import write_idx

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


def _one_line_error(proc, *needles):
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedcl: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("override, needle", [
    ("model.backbone=nope", "unknown backbone 'nope'"),
    ("model.transform.name=nope", "unknown transform 'nope'"),
    ("model.head.name=nope", "unknown head 'nope'"),
    ("data.dataset=nope", "unknown dataset 'nope'"),
    ("train.batch_size=-3", "train.batch_size"),
    ("train.lr=fast", "train.lr"),
    ("train.epochz=1", "train.epochz"),
    ("model.checkpoint=/no/such/weights.pth", "/no/such/weights.pth"),
])
def test_bad_input_is_one_line_without_traceback(override, needle, tmp_path):
    _one_line_error(fedcl("train", "--preset", "smoke", "--set", override, "--out", str(tmp_path)), needle)
    assert not (tmp_path / "results.json").exists()


def test_missing_and_corrupt_data_files(tmp_path):
    _one_line_error(fedcl("train", "--preset", "smoke", "--set", f"data.root={tmp_path}"), str(tmp_path))
    write_idx(tmp_path / "train-images-idx3-ubyte", [[[0]]])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # truncated
    write_idx(tmp_path / "t10k-images-idx3-ubyte", [[[0]]])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", [0])
    _one_line_error(fedcl("train", "--preset", "smoke", "--set", f"data.root={tmp_path}"), "train-labels-idx1-ubyte")


def test_missing_config_file(tmp_path):
    _one_line_error(fedcl("train", "--config", str(tmp_path / "nope.toml")), "nope.toml")


def test_simulate_end_to_end(tmp_path):
    out = tmp_path / "fed"
    proc = fedcl("simulate", "--preset", "fedsmoke", "--set", "federation.quantization=int8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["mode"] == "federated" and r["communication"]["quantization"] == "int8"
    assert r["final_avg_accuracy"] > 0.5 and r["rejected_updates"] == []
    assert "fedcl federated results" in proc.stdout


@pytest.mark.parametrize("override, needle", [
    ("federation.partition=bogus", "federation.partition must be one of"),
    ("federation.num_clients=0", "federation.num_clients must be at least 1"),
    ("federation.min_available_nodes=9", "min_available_nodes=9 exceeds"),
])
def test_simulate_bad_input(override, needle):
    _one_line_error(fedcl("simulate", "--preset", "fedsmoke", "--set", override), needle)


def test_simulate_fedprox_per_client_order_shards(tmp_path):
    out = tmp_path / "prox"
    proc = fedcl("simulate", "--preset", "fedsmoke", "--out", str(out), "--set", "federation.strategy=fedprox",
                 "--set", "federation.task_order=per_client", "--set", "federation.partition=shard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    orders = {tuple(v["order"]) for v in r["per_client"]["task_schedule"].values()}
    assert r["rejected_updates"] == [] and r["config"]["federation"]["strategy"] == "fedprox"
    assert all(sorted(o) == [0, 1] for o in orders)
    assert r["final_avg_accuracy"] > 0.4
