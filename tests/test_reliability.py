"""Reliability of real federated runs (in-process backend: the real ServerApp, strategy, ClientApp and
Flower Messages rebuilt from their wire bytes): malicious clients, faults, central DP. Kill-and-resume across
backends: tests/test_simulation.py."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcl.config import build_config
from fedcl.federation.client_app import handle_query
from fedcl.federation.client_handlers import handle_evaluate, handle_train
from fedcl.federation.node import partition_id
from fedcl.federation.codec import encode
from fedcl.federation.inline import run_inline
from fedcl.federation.server_app import build_server_app
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_federated
from fedcl.federation.strategy import FedCLStrategy
from fedcl.runner import without_wall_clock
from fedcl.state_files import GLOBAL_MODEL_FILE, load_state_file

TINY = ["federation.backend=inline", "data.num_tasks=2", "data.max_train_per_class=24", "data.max_test_per_class=20",
        "federation.rounds_per_task=2", "federation.boundary_jitter=0", 'federation.device_profiles=["server"]',
        "federation.partition=iid", "federation.evaluate_clients=false"]

ATTACKS = ["nan", "inf", "shape", "dtype", "extra", "backbone", "huge"]


def config(*overrides: str) -> FedRunConfig:
    return build_config("fedsmoke", None, TINY + list(overrides), schema=FedRunConfig)


def _tamper(reply: Message, attack: str) -> RecordDict:
    state = {k: torch.from_numpy(v.numpy().copy()) for k, v in reply.content.array_records["arrays"].items()}
    key = next(k for k in sorted(state) if k.startswith("transform."))
    if attack == "nan":
        state[key].view(-1)[0] = float("nan")
    elif attack == "inf":
        state[key].view(-1)[-1] = float("inf")
    elif attack == "shape":
        state[key] = state[key].flatten()[:-1]
    elif attack == "dtype":
        state[key] = state[key].double()
    elif attack == "extra":
        state["head.secret"] = torch.zeros(4)
    elif attack == "backbone":
        state["backbone.model.conv_stem.weight"] = torch.zeros(32, 3, 3, 3)
    elif attack == "huge":
        state[key] = state[key] * 1e6 + 1e3
    return RecordDict({"arrays": encode(state), "metrics": reply.content.metric_records["metrics"]})


def adversarial_app(cfg: FedRunConfig, attacks: dict[int, str], excluded: bool = False) -> ClientApp:
    """The real ClientApp, except that the clients in ``attacks`` tamper with their update
    (or, with ``excluded``, sit the run out by reporting no examples)."""
    app = ClientApp()

    @app.train()
    def train(msg, context):
        reply = handle_train(cfg, msg, context)
        attack = attacks.get(partition_id(context))
        if attack is None:
            return reply
        if excluded:
            metrics = reply.content.metric_records["metrics"]
            return Message(RecordDict({"metrics": MetricRecord({**dict(metrics), "num-examples": 0})}), reply_to=msg)
        return Message(_tamper(reply, attack), reply_to=msg)

    app.query()(handle_query)
    app.evaluate()(lambda msg, context: handle_evaluate(cfg, msg, context))
    return app


def test_malicious_updates_are_refused_and_the_model_equals_the_run_without_them(tmp_path):
    honest = 3
    attacks = {honest + i: a for i, a in enumerate(ATTACKS)}
    cfg = config(f"federation.num_clients={honest + len(ATTACKS)}", "federation.max_update_norm=1000.0", "federation.rounds_per_task=1")
    run_inline(build_server_app(cfg, tmp_path / "attacked"), adversarial_app(cfg, attacks), cfg.federation.num_clients)
    run_inline(build_server_app(cfg, tmp_path / "without"), adversarial_app(cfg, attacks, excluded=True), cfg.federation.num_clients)
    attacked = json.loads((tmp_path / "attacked" / "results.json").read_text())
    without = json.loads((tmp_path / "without" / "results.json").read_text())

    rejected = attacked["rejected_updates"]
    assert len(rejected) == len(ATTACKS) * cfg.num_rounds and without["rejected_updates"] == []
    for pid, reason in [(3, "NaN or infinite"), (4, "NaN or infinite"), (5, "has shape"), (6, "has dtype float64"),
                        (7, "unexpected ['head.secret']"), (8, "unexpected ['backbone.model.conv_stem.weight']"),
                        (9, "exceeds federation.max_update_norm")]:
        assert sum(f"client {pid}" in r and reason in r for r in rejected) == cfg.num_rounds, (pid, reason, rejected)
    assert all(row["clients_trained"] == honest and row["clients_rejected"] == len(ATTACKS) for row in attacked["communication"]["per_round"])
    a, b = load_state_file(tmp_path / "attacked" / GLOBAL_MODEL_FILE), load_state_file(tmp_path / "without" / GLOBAL_MODEL_FILE)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for v in a.values())
    assert attacked["accuracy_per_round"] == without["accuracy_per_round"]


def test_crashing_and_late_clients_do_not_stop_the_run(tmp_path, monkeypatch):
    # every round, one of the three clients crashes (33 %); in round 2 another one answers too late
    crashes = [f"{r}:{r % 3}" for r in range(1, 5)]
    cfg = config("federation.num_clients=3", f"federation.fault_schedule={json.dumps(crashes + ['2:0:timeout'])}",
                 "federation.round_timeout_s=15", "federation.node_wait_s=23")
    waits = []  # a new node's first reply (its ClientApp may still be starting) is awaited the longer of node_wait_s and the round's deadline
    discover = FedCLStrategy.discover
    monkeypatch.setattr(FedCLStrategy, "discover", lambda self, grid, timeout: (waits.append(timeout), discover(self, grid, timeout))[1])
    results = run_federated(cfg, tmp_path, quiet=True)
    assert waits and set(waits) == {23}
    rows = {row["round"]: row for row in results["communication"]["per_round"]}
    for r in range(1, 5):
        assert rows[r]["clients_failed"] == 1 and rows[r]["clients_sampled"] == 3
        assert (rows[r]["clients_failed"] + rows[r]["clients_timed_out"]) / rows[r]["clients_sampled"] >= 0.3
    assert rows[2]["clients_timed_out"] == 1 and rows[2]["clients_trained"] == 1
    assert all(rows[r]["clients_trained"] == 2 for r in (1, 3, 4))
    assert sum("crashed in round" in r for r in results["rejected_updates"]) == 4
    assert results["final_avg_accuracy"] > 0.35  # 4 classes seen: chance is 0.25


def test_rounds_without_quorum_keep_the_global_model(tmp_path):
    cfg = config("federation.num_clients=3", "federation.min_train_replies=3", 'federation.fault_schedule=["2:1"]')
    results = run_federated(cfg, tmp_path, quiet=True)
    rows = {row["round"]: row for row in results["communication"]["per_round"]}
    assert [rows[r]["quorum"] for r in range(1, 5)] == [True, False, True, True]
    acc = results["accuracy_per_round"]
    assert acc["2"] == acc["1"]  # the global model did not move in round 2 (same task, same test classes)


def test_central_dp_clips_and_noises_reproducibly(tmp_path):
    cfg = config("federation.num_clients=3", "federation.dp_clipping_norm=0.05", "federation.dp_noise_multiplier=0.5", "federation.rounds_per_task=1")
    first = run_federated(cfg, tmp_path / "a", quiet=True)
    second = run_federated(cfg, tmp_path / "b", quiet=True)
    assert without_wall_clock(first) == without_wall_clock(second)  # the noise is drawn from the seed
    assert first["privacy"]["noise_std_per_round"] == [pytest.approx(0.5 * 0.05 / 3)] * cfg.num_rounds == [pytest.approx(0.5 * 0.05 / 3)] * 2
    plain = run_federated(config("federation.num_clients=3", "federation.rounds_per_task=1"), tmp_path / "plain", quiet=True)
    assert first["accuracy_per_round"] != plain["accuracy_per_round"]
