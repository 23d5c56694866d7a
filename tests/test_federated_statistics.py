"""Summed statistics in federation are exact: the federated statistical head equals the head fitted
centrally on the union of the clients' data, whatever the partition, task order, boundaries, sampling,
unavailable rounds, lost replies, or a kill and resume (real ServerApp, ClientApp and Flower messages,
in-process backend)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.common import MessageType
from flwr.clientapp import ClientApp

import fedcl.federation.server_app as server_app_module
from fedcl.builder import benchmark_for, build_learner, build_model, client_stream, load_state
from fedcl.config import build_config
from fedcl.errors import ConfigError, FedclError
from fedcl.federation.client_state import StateStamp, load_client_state, save_client_state
import fedcl.state_files as state_files
from fedcl.federation.client_app import handle_query
from fedcl.federation.client_handlers import handle_train, syncs_each_state_file
from fedcl.federation.node import partition_id
from fedcl.federation.inline import run_inline
from fedcl.federation.checkpoint import CHECKPOINT_FILE, STAGED_CHECKPOINT_FILE, load_checkpoint
from fedcl.federation.codec import decode, encode
from fedcl.federation.flower_adapter import task_identity
from fedcl.federation.server_app import build_server_app, server_model
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_federated
from fedcl.state_files import GLOBAL_MODEL_FILE, load_state_file

TINY = ["federation.backend=inline", "method.name=head_only", "model.head.name=ridge", "data.num_tasks=3",
        "data.max_train_per_class=10", "data.max_test_per_class=6", "federation.num_clients=4",
        "federation.rounds_per_task=3", "federation.boundary_jitter=2", "federation.fraction_train=0.5",
        'federation.device_profiles=["phone"]', "federation.evaluate_clients=false"]
#: a random projection (RanPAC) to 256 dimensions in all settings but the first: the sums are exact either way, and
#: the ridge head's eigendecomposition at D = 1280 (0.5 s a solve, every round whose sums changed) is paid once
RANPAC = "model.head.options.projection_dim=256"
SETTINGS = {
    "iid-shared": ["federation.partition=iid"],
    "dirichlet0.1-per_client": ["federation.partition=dirichlet", "federation.dirichlet_alpha=0.1", "federation.task_order=per_client", RANPAC],
    "shard-shared": ["federation.partition=shard", "federation.shards_per_client=2", RANPAC],
    "dirichlet0.1-shared": ["federation.partition=dirichlet", "federation.dirichlet_alpha=0.1", RANPAC],
}


def config(*overrides: str) -> FedRunConfig:
    return build_config("fedsmoke", None, TINY + list(overrides), schema=FedRunConfig)


def central_head(cfg: FedRunConfig):
    """The same head fitted on one device on the union of every client's training data."""
    benchmark = benchmark_for(cfg)
    model, method = build_model(cfg, benchmark)
    learner = build_learner(cfg, model, method, benchmark, cfg.seed)
    for pid in range(cfg.federation.num_clients):
        learner.gathered.tasks = set()
        for experience in client_stream(cfg, pid):
            learner.accumulate_statistics(experience)
    return model, benchmark


def federated_model(cfg: FedRunConfig, out):
    benchmark = benchmark_for(cfg)
    model, _ = build_model(cfg, benchmark)
    load_state(model, {k: v for k, v in load_state_file(out / GLOBAL_MODEL_FILE).items()})
    return model


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-300))


def assert_same_head(federated, central, benchmark) -> None:
    for name, buffer in central.head.named_buffers():
        if name in dict(federated.head.named_buffers()) and buffer.dtype == torch.float64:
            assert rel_diff(dict(federated.head.named_buffers())[name], buffer) <= 1e-6, name
    assert float(central.head.counts.sum()) > 0
    (wf, bf), (wc, bc) = federated.head.solve(), central.head.solve()
    assert rel_diff(wf, wc) <= 1e-6 and rel_diff(bf, bc) <= 1e-6
    features = torch.randn(50, central.head.feature_dim, generator=torch.Generator().manual_seed(0)).abs()
    lf, lc = federated.head(features), central.head(features)
    finite = torch.isfinite(lc)
    assert torch.equal(finite, torch.isfinite(lf)) and rel_diff(lf[finite], lc[finite]) <= 1e-6
    assert torch.equal(lf.argmax(1), lc.argmax(1))


@pytest.mark.parametrize("setting", list(SETTINGS), ids=list(SETTINGS))
def test_federated_head_equals_the_central_fit(tmp_path, setting):
    cfg = config(*SETTINGS[setting])
    results = run_federated(cfg, tmp_path, quiet=True)
    central, benchmark = central_head(cfg)
    assert_same_head(federated_model(cfg, tmp_path), central, benchmark)
    rows = results["communication"]["per_round"]
    assert sum(r.get("clients_unavailable", 0) for r in rows) > 0  # the setting did drop some clients


def lossy_app(cfg: FedRunConfig, lost: set[tuple[int, int]]) -> ClientApp:
    """Clients whose replies in the given (partition, round) pairs are lost after they trained (state kept)."""
    app = ClientApp()

    @app.train()
    def train(msg, context):
        reply = handle_train(cfg, msg, context)
        if (partition_id(context), int(msg.content["config"]["server-round"])) in lost:
            return Message(Error(0, "reply lost in transit"), reply_to=msg)
        return reply

    @app.query()
    def query(msg, context):
        return handle_query(msg, context)

    return app


def test_lost_replies_are_sent_again(tmp_path):
    cfg = config("federation.partition=iid", "federation.fraction_train=1.0", 'federation.device_profiles=["server"]',
                 "federation.boundary_jitter=0", RANPAC)
    # every client's first upload is lost (sent again in round 2), and client 1's uploads of the last task
    # (its statistics then come in the collect step)
    lost = {(pid, 1) for pid in range(4)} | {(1, r) for r in range(cfg.num_rounds - 2, cfg.num_rounds + 1)}
    run_inline(build_server_app(cfg, tmp_path), lossy_app(cfg, lost), cfg.federation.num_clients)
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["rejected_updates"]) == len(lost)
    # the others' last uploads were added: only client 1 is asked in the collect step, and it sends its last task
    collect = results["communication"]["collect_step"]
    assert (collect["clients_asked"], collect["clients_contributed_ids"]) == (1, [1])
    central, benchmark = central_head(cfg)
    assert_same_head(federated_model(cfg, tmp_path), central, benchmark)


def test_a_client_first_sampled_late_gathers_the_tasks_it_missed():
    cfg = config("federation.partition=iid", "federation.boundary_jitter=0")
    _, model, _, global_state = server_model(cfg)
    content = RecordDict({"arrays": encode(global_state), "config": ConfigRecord({"server-round": 4, "run-token": ""})})
    with task_identity(1, 1, 1):
        msg = Message(content, 1, MessageType.TRAIN)
        reply = handle_train(cfg, msg, Context(1, 1, {"partition-id": 0}, RecordDict(), {}))
    counts = decode(reply.content["arrays"], global_state, optional=frozenset(global_state))["head.counts"]
    stream = client_stream(cfg, 0)
    expected = torch.zeros_like(counts)
    for experience in stream[:2]:  # round 4 is in the second task: the first one is caught up
        expected += torch.bincount(experience.data.labels, minlength=len(counts)).double()
    assert torch.equal(counts, expected) and float(counts.sum()) > 0


def test_a_stopped_run_resumes_without_double_counting(tmp_path, monkeypatch):
    # checkpoints every 2 rounds, stopped in round 6 before its checkpoint: the server resumes after round 4,
    # while clients have state on disk from rounds 5 and 6 (which a resume must ignore)
    every = ["federation.checkpoint_every=2", "federation.fraction_train=1.0", 'federation.device_profiles=["server"]', *SETTINGS["shard-shared"]]
    cfg = config(*every)
    stop_at = 6

    def stop(server_round, *args, **kwargs):
        if server_round == stop_at:
            raise KeyboardInterrupt("stopped by the test")

    monkeypatch.setattr(server_app_module, "round_done", stop)
    with pytest.raises(BaseException):
        run_federated(cfg, tmp_path, quiet=True)
    assert not (tmp_path / "results.json").exists()
    crashed = load_checkpoint(tmp_path / STAGED_CHECKPOINT_FILE, cfg.to_dict()).state
    monkeypatch.undo()
    run_federated(config(*every, "federation.resume=true"), tmp_path, quiet=True)
    central, benchmark = central_head(cfg)
    assert_same_head(federated_model(cfg, tmp_path), central, benchmark)
    # the resumed attempt names the crashed one and the last round of it that counts (its checkpoint's)
    resumed = load_checkpoint(tmp_path / CHECKPOINT_FILE, cfg.to_dict()).state
    assert resumed["run_token"] == crashed["run_token"] and resumed["attempt"] != crashed["attempt"]
    assert resumed["earlier_attempts"] == [[crashed["attempt"], 4]]


def test_a_resumed_attempt_loads_no_state_the_crashed_one_saved_after_its_checkpoint(tmp_path):
    """Attempt A checkpointed after round 4 and crashed after its clients saved rounds 5 and 6. Attempt B resumes
    from round 4: a client it first reaches in round 7 must continue from its round-4 state, not A's round 6."""
    a = StateStamp("run", "A")
    for r in (3, 4, 5, 6):
        save_client_state(tmp_path, 0, r, {"replay": {"x": torch.full((1,), float(r))}}, r, a, keep_since=4, sync=False)
    b = StateStamp("run", "B", (("A", 4),))
    plugins, rounds = load_client_state(tmp_path, 0, 7, b)
    assert rounds == 4 and float(plugins["replay"]["x"]) == 4.0
    assert load_client_state(tmp_path, 0, 7, a)[1] == 6  # a node restarted within attempt A: its newest
    save_client_state(tmp_path, 0, 7, {"replay": {"x": torch.zeros(1)}}, 5, b, keep_since=4, sync=False)
    assert load_client_state(tmp_path, 0, 8, b)[1] == 5  # B's own state, once it saved one
    # B crashes after checkpointing round 7 (its own round 7); C resumes: A's rounds 5-6 stay out
    c = StateStamp("run", "C", (("A", 4), ("B", 7)))
    (tmp_path / "0" / "round-7.safetensors").unlink()
    assert load_client_state(tmp_path, 0, 9, c)[1] == 4
    assert load_client_state(tmp_path, 0, 9, StateStamp("other run", "A")) is None
    # the stamp travels in the train message's config and comes back the same
    assert StateStamp.from_config(ConfigRecord(c.config())) == c


def test_pruning_keeps_the_state_a_later_resume_loads_and_drops_what_no_attempt_will(tmp_path):
    """A saved rounds 4-6 (checkpoint 4) and crashed; B resumed from 4, checkpointed 6 and saved round 8 for a
    client it first reached then. The round-4 state is what a resume from B's checkpoint needs: A's rounds 5-6
    (stale, newer) must not push it out, and they are deleted."""
    a, b = StateStamp("run", "A"), StateStamp("run", "B", (("A", 4),))
    for r in (4, 5, 6):
        save_client_state(tmp_path, 0, r, {"replay": {"x": torch.full((1,), float(r))}}, r, a, keep_since=4, sync=False)
    assert load_client_state(tmp_path, 0, 8, b)[1] == 4
    save_client_state(tmp_path, 0, 8, {"replay": {"x": torch.zeros(1)}}, 5, b, keep_since=6, sync=False)
    assert sorted(p.name for p in (tmp_path / "0").iterdir()) == ["round-4.safetensors", "round-8.safetensors"]
    c = StateStamp("run", "C", (("A", 4), ("B", 6)))
    assert load_client_state(tmp_path, 0, 7, c)[1] == 4


def test_simulated_clients_write_state_unflushed_and_the_server_syncs_before_each_checkpoint(tmp_path, monkeypatch):
    events, write_atomic, sync = [], state_files.write_atomic, os.sync

    def recording_write(path, write, sync=True):
        kind = "client" if "client_state" in str(path) else Path(path).name.split(".")[0]
        events.append((kind, sync))
        return write_atomic(path, write, sync)

    def recording_sync():
        events.append(("os.sync", None))
        sync()

    monkeypatch.setattr(state_files, "write_atomic", recording_write)
    monkeypatch.setattr(os, "sync", recording_sync)
    run_federated(config("federation.fraction_train=1.0", 'federation.device_profiles=["server"]'), tmp_path, quiet=True)
    kinds = [kind for kind, _ in events]
    assert "client" in kinds and "checkpoint" in kinds
    assert all(flag is False for kind, flag in events if kind == "client")  # one by one: not flushed
    assert all(flag is True for kind, flag in events if kind == "checkpoint")
    for i, kind in enumerate(kinds):
        if kind == "checkpoint":  # every client state written before it is on disk when it is
            last_client = max(j for j in range(i) if kinds[j] == "client")
            assert "os.sync" in kinds[last_client:i], (i, kinds[last_client:i])
    cfg, node = config(), Context(1, 1, {"partition-id": 0, "state-dir": str(tmp_path / "node")}, RecordDict(), {})
    simulated = Context(1, 1, {"partition-id": 0}, RecordDict(), {})
    assert syncs_each_state_file(cfg, node, default=tmp_path) and syncs_each_state_file(cfg, node, default=None)
    assert not syncs_each_state_file(cfg, simulated, default=tmp_path)
    assert syncs_each_state_file(config('federation.ray_address="10.0.0.1:6379"'), simulated, default=tmp_path)  # not this disk


def test_a_torn_unflushed_client_state_falls_back_to_the_one_before(tmp_path):
    state = {"replay": {"x": torch.ones(3)}}
    save_client_state(tmp_path, 0, 2, state, 2, StateStamp("token"), sync=False)
    save_client_state(tmp_path, 0, 3, {"replay": {"x": torch.zeros(3)}}, 3, StateStamp("token"), sync=False)
    (tmp_path / "0" / "round-3.safetensors").write_bytes(b"")  # what a machine crash can leave of an unflushed file
    plugins, rounds = load_client_state(tmp_path, 0, 4, StateStamp("token"), skip_unreadable_after=2)
    assert rounds == 2 and torch.equal(plugins["replay"]["x"], torch.ones(3))
    with pytest.raises(FedclError, match="round-3.safetensors is corrupt"):  # synced before checkpoint 3: on disk
        load_client_state(tmp_path, 0, 4, StateStamp("token"), skip_unreadable_after=3)
    with pytest.raises(FedclError, match="round-3.safetensors is corrupt"):  # a flushed file: corruption, said
        load_client_state(tmp_path, 0, 4, StateStamp("token"))


def test_statistics_travel_once_per_task_and_g_packed(tmp_path):
    # (with factors off: these clients are small enough to send G as a factor, tests/test_gram_factor.py)
    cfg = config("federation.partition=iid", "federation.fraction_train=1.0", 'federation.device_profiles=["server"]',
                 "federation.boundary_jitter=0", "federation.gram_factor=false")
    results = run_federated(cfg, tmp_path, quiet=True)
    d, k = 1280, 6
    stats_bytes = 8 * (k + k * d + d * (d + 1) // 2)  # counts, sums, packed upper triangle of G (float64)
    rounds = [row for row in results["communication"]["per_round"] if row["round"] <= cfg.num_rounds]
    assert len(rounds) == cfg.num_rounds
    for row in rounds:
        r = row["round"]
        for pid, up in row["per_client_up"].items():
            first_round_of_task = (r - 1) % cfg.federation.rounds_per_task == 0
            assert (up > stats_bytes) == first_round_of_task, (r, pid, up)
            assert up < stats_bytes + d * d * 8 / 2  # the full G would not fit
        for pid, down in row["per_client_down"].items():  # the sums stay on the server: clients gather their own
            assert down < stats_bytes / 100, (r, pid, down)
    # every client trained in every round: the server added everything, so the collect step asks no one
    assert results["communication"]["collect_step"]["clients_asked"] == 0
    assert results["communication"]["collect_step"]["clients_contributed"] == 0
    assert results["communication"]["bytes_up_per_client_per_task"] > stats_bytes / cfg.federation.rounds_per_task


def test_central_dp_refuses_summed_statistics_in_one_line():
    with pytest.raises(ConfigError) as info:
        from fedcl.federation.strategy import FedCLStrategy
        FedCLStrategy(config("federation.dp_clipping_norm=1.0"), {"head.counts": torch.zeros(2)}, {"head.counts": "sum"}, 0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("earlier", [5, "ab", [["a"]], [["a", 1, 2]], [["a", 10**30]], [["a", float("inf")]], [["a", 1.5]], [["a", True]],
                                     [["a", -1]], [["a", 7]], [[3, 1]], [["x" * 65, 1]], [["a", 1]] * 10_001, [None],
                                     [["\ud800", 1]], [["a b", 1]]])
def test_a_checkpoint_with_malformed_earlier_attempts_is_damaged(earlier):
    """Each must raise what start_or_resume turns into one CheckpointError line (not reach a client message)."""
    with pytest.raises((ValueError, TypeError)):
        server_app_module.resumed_stamp({"run_token": "t", "attempt": "B", "earlier_attempts": earlier}, 6)


@pytest.mark.parametrize("state", [{"run_token": "", "attempt": "B"}, {"run_token": "\ud800"}, {"run_token": "t", "attempt": "\ud800"}])
def test_a_checkpoint_with_a_malformed_run_token_or_attempt_is_damaged(state):
    """(a lone surrogate reached Flower's message encoder and raised there; an empty token disabled client state)"""
    with pytest.raises(ValueError):
        server_app_module.resumed_stamp(state, 6)


def test_a_resumed_stamp_names_the_checkpoints_attempt():
    stamp = server_app_module.resumed_stamp({"run_token": "t", "attempt": "B", "earlier_attempts": [["A", 4]]}, 6)
    assert (stamp.run_token, stamp.earlier) == ("t", (("A", 4), ("B", 6))) and stamp.attempt not in ("A", "B")


def test_a_folder_named_like_a_state_file_is_left_alone(tmp_path):
    """(it made pruning raise IsADirectoryError, and the client was rejected in every round after)"""
    (tmp_path / "0" / "round-1.safetensors").mkdir(parents=True)
    for r in (2, 3, 4):
        save_client_state(tmp_path, 0, r, {"replay": {"x": torch.ones(1)}}, r, StateStamp("t"), sync=False)
    assert load_client_state(tmp_path, 0, 9, StateStamp("t"))[1] == 4 and (tmp_path / "0" / "round-1.safetensors").is_dir()
