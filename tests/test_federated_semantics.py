"""Federated semantics (issue 13): each aggregation rule against a value computed by hand or centrally."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from helpers import tiny_learner
from test_strategy import configure, identity, reply, strategy  # noqa: F401 (identity: autouse fixture)

from fedcl.errors import ConfigError
from fedcl.federation.aggregation import ClientUpdate, aggregate
from fedcl.federation.aggregators import check_aggregator, create_aggregator
from fedcl.federation.codec import decode_update, encode, encode_update
from fedcl.federation.faults import InjectedFault, fault_mod
from fedcl.federation.flower_adapter import check_flower_version, set_source
from fedcl.federation.privacy import epsilons
from fedcl.federation.schedule import TaskSchedule
from fedcl.federation.server_app import accuracy_results, client_matrix, local_accuracies
from fedcl.federation.strategy import FedCLStrategy
from fedcl.methods.base import trainable_named
from fedcl.metrics import average_forgetting, average_incremental_accuracy

TINY = ["data.num_tasks=3", "data.max_train_per_class=16", "data.max_test_per_class=8", "data.image_size=32",
        "train.epochs=1", "train.batch_size=16"]


# ---------------------------------------------------------------------- client metadata
def test_trained_counts_include_replayed_classes(lite0):
    _, benchmark, _, learner = tiny_learner(lite0, TINY, "method.plugins.replay.buffer_size=20")
    first, second = benchmark.train_stream[:2]
    learner.train_experience(first)
    stats = learner.train_experience(second)
    old = benchmark.task_classes[0]
    assert all(stats["class_counts"][c] > 0 for c in old)  # replayed samples are in the loss
    assert stats["task_counts"][0] > 0 and sum(stats["class_counts"]) == stats["num_examples"]


def test_trained_counts_include_distilled_classes(lite0):
    _, benchmark, _, learner = tiny_learner(lite0, TINY, "method.plugins.lwf.alpha=1.0")
    first, second = benchmark.train_stream[:2]
    learner.train_experience(first)
    stats = learner.train_experience(second)
    # every sample of the new task distils the old classes' logits
    assert [stats["class_counts"][c] for c in benchmark.task_classes[0]] == [len(second)] * 2


# ---------------------------------------------------------------------- FedAdam
def test_fedadam_keeps_rows_nobody_trained():
    s = strategy(**{"federation.strategy": "fedadam", "federation.server_lr": 0.5})
    sent = configure(s, [1, 2])
    s.aggregate_train(1, [reply(sent[0], 0, 1.0, [1, 0, 0, 0])])
    after_first = s.global_state["head.fc.bias"].clone()
    sent = configure(s, [1, 2], server_round=2)
    s.aggregate_train(2, [reply(sent[0], 0, 1.0, [0, 1, 0, 0])])
    # row 0 was not trained in round 2: neither its value nor its moments move
    assert s.global_state["head.fc.bias"][0] == after_first[0] and s.global_state["head.fc.bias"][1] > 0
    assert s.global_state["head.fc.bias"][2] == 0 and s.global_state["head.fc.bias"][3] == 0


# ---------------------------------------------------------------------- robust aggregation
@pytest.mark.parametrize("method", ["median", "trimmed_mean", "krum"])
def test_robust_rules_work_per_class_over_the_clients_that_trained_it(method):
    s = strategy(**{"federation.aggregation": method})
    sent = configure(s, [1, 2, 3, 4, 5])
    # class 3 is held by two clients only (label skew); the other three never saw it
    replies = [reply(sent[i], i, 1.0, [2, 2, 2, 0]) for i in range(3)]
    replies += [reply(sent[i], i, 5.0, [2, 0, 0, 2]) for i in (3, 4)]
    s.aggregate_train(1, replies)
    assert float(s.global_state["head.fc.bias"][3]) == pytest.approx(5.0)  # not voted back to the untrained value
    assert float(s.global_state["head.fc.bias"][1]) == pytest.approx(1.0)


def test_unknown_aggregator_names_the_choices():
    with pytest.raises(ConfigError, match="must be one of krum, median, trimmed_mean, weighted: got 'mean'"):
        check_aggregator("mean")
    assert float(create_aggregator("trimmed_mean", trim_fraction=0.25, unused=1)(torch.tensor([[[0.0]], [[1.0]], [[2.0]], [[90.0]]]), None)) == 1.5


def test_a_reply_may_omit_sum_statistics():
    g = {"head.sums": torch.ones(3, dtype=torch.float64), "head.w": torch.zeros(2)}
    kinds = {"head.sums": "sum", "head.w": "examples"}
    a = ClientUpdate({"head.sums": torch.full((3,), 4.0, dtype=torch.float64), "head.w": torch.ones(2)}, 1, [1], [1])
    b = ClientUpdate({"head.w": torch.full((2,), 3.0)}, 1, [1], [1])  # no new statistics this round
    out = aggregate(g, [a, b], kinds)
    assert out["head.sums"].tolist() == [4.0, 4.0, 4.0] and out["head.w"].tolist() == [2.0, 2.0]


# ---------------------------------------------------------------------- central DP
def test_dp_mean_divides_by_the_sampled_clients():
    s = strategy(**{"federation.dp_clipping_norm": 100.0, "federation.dp_noise_multiplier": 0.0})
    sent = configure(s, [1, 2, 3])
    failed = Message(Error(0, "boom"), reply_to=sent[2])
    set_source(failed, 3)
    s.aggregate_train(1, [reply(sent[0], 0, 1.0, [1, 1, 1, 1]), reply(sent[1], 1, 1.0, [1, 0, 0, 0]), failed])
    # sum of clipped updates over 3 sampled clients (the failed one counts as zero), rows masked to what was trained
    assert torch.allclose(s.global_state["transform.delta"], torch.full((5,), 2 / 3))
    assert torch.allclose(s.global_state["head.fc.bias"], torch.tensor([2 / 3, 1 / 3, 1 / 3, 1 / 3]))


def test_dp_refuses_summed_statistics():
    cfg = strategy(**{"federation.dp_clipping_norm": 1.0}).cfg
    with pytest.raises(ConfigError, match="cannot protect summed statistics"):
        FedCLStrategy(cfg, {"head.sums": torch.ones(2)}, {"head.sums": "sum"}, full_model_array_bytes=1)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    low = epsilons(1.0, [5, 5, 5], 10, 1e-5)
    high = epsilons(4.0, [5, 5, 5], 10, 1e-5)
    assert low[0] < low[1] < low[2] and all(hi < lo for hi, lo in zip(high, low))
    assert epsilons(0.0, [5], 10, 1e-5) == [None]


# ---------------------------------------------------------------------- quantisation
@pytest.mark.parametrize("q, small", [("fp16", 2e-8), ("int8", 1e-3)])
def test_quantised_small_updates_survive_in_expectation(q, small):
    """Updates below one quantisation step (fp16: under half its smallest subnormal; int8: under (max - min) / 255)
    vanish or are biased with round-to-nearest; stochastic rounding keeps them in expectation."""
    torch.manual_seed(0)
    received = {"w": torch.randn(20_000)}
    update = torch.full((20_000,), small)
    update[:2] = torch.tensor([-1.0, 1.0])  # a wide range: one int8 step is ~0.008
    local = {"w": received["w"] + update}
    back = decode_update(encode_update(local, received, q, seed=7), received, q)
    assert float((back["w"] - received["w"])[2:].mean()) == pytest.approx(float((local["w"] - received["w"])[2:].mean()), rel=0.2)


def test_unquantised_updates_are_the_state_itself():
    state = {"w": torch.randn(4)}
    back = decode_update(encode_update(state, {"w": torch.zeros(4)}, "none", seed=0), {"w": torch.zeros(4)}, "none")
    assert torch.equal(back["w"], state["w"]) and set(encode(state).keys()) == {"w"}


# ---------------------------------------------------------------------- accuracy matrices and metrics
def test_forgetting_ignores_rows_before_a_task_was_learned():
    r = np.array([[0.9, 0.9, 0.0], [0.8, 0.5, 0.0], [0.7, 0.4, 0.6]])
    assert average_forgetting(r) == pytest.approx(((0.9 - 0.7) + (0.5 - 0.4)) / 2)
    assert average_incremental_accuracy(r) == pytest.approx((0.9 + 0.65 + 1.7 / 3) / 3)


def test_per_client_task_order_matrices():
    schedule = TaskSchedule(3, 1, task_order="per_client", seed=0)
    acc = {0: [0.0, 0.0, 0.0], 1: [0.1, 0.2, 0.3], 2: [0.4, 0.5, 0.6], 3: [0.7, 0.8, 0.9]}
    evaluation = SimpleNamespace(schedule=schedule, accuracy=acc, boundaries=[1, 2, 3], benchmark=SimpleNamespace(scenario="class_incremental"))
    order = schedule.order(1)
    matrix, initial = client_matrix(evaluation, 1)
    assert initial is None and matrix[2, 0] == acc[3][order[0]] and matrix[0, 1] == acc[1][order[1]]
    cfg = SimpleNamespace(federation=SimpleNamespace(task_order="per_client", num_clients=2))
    results = accuracy_results(cfg, evaluation)
    expected = np.mean([average_forgetting(client_matrix(evaluation, c)[0]) for c in range(2)])
    assert results["avg_forgetting"] == pytest.approx(expected) and results["final_avg_accuracy"] == pytest.approx(0.8)


def test_local_accuracy_on_shared_test_data_comes_from_the_server():
    cfg = SimpleNamespace(method=SimpleNamespace(plugins={}), data=SimpleNamespace(num_tasks=2),
                          federation=SimpleNamespace(rounds_per_task=1, boundary_jitter=0, task_order="shared"), seed=0)
    benchmark = SimpleNamespace(test_stream=[[0] * 10, [0] * 30])
    assert local_accuracies(cfg, benchmark, [0.5, 0.9], 2, [0, 1]) == {0: pytest.approx(0.8), 1: pytest.approx(0.8)}
    assert local_accuracies(cfg, benchmark, [0.5, 0.9], 1, [0]) == {0: pytest.approx(0.5)}


# ---------------------------------------------------------------------- EWC
def test_ewc_fisher_is_per_sample(lite0):
    _, benchmark, model, learner = tiny_learner(lite0, TINY, 'method.name="head_only"', "method.plugins.ewc.fisher_samples=8")
    ewc = next(p for p in learner.plugins if p.name == "ewc")
    experience = benchmark.train_stream[0]
    learner.begin_task(experience)
    fisher = ewc.estimate_fisher(learner, experience)
    params = trainable_named(model)
    mask = learner.train_mask(experience)
    inputs, labels, ids, are_features = next(learner.batches(experience, 16, shuffle=False))
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(8):
        logits = model.head(inputs[i : i + 1], ids[i : i + 1]).masked_fill(~mask, float("-inf"))
        for (n, _), g in zip(params.items(), torch.autograd.grad(F.cross_entropy(logits, labels[i : i + 1]), list(params.values()))):
            expected[n] += g.pow(2) / 8
    assert are_features and all(torch.allclose(fisher[n], expected[n], atol=1e-7) for n in params)


# ---------------------------------------------------------------------- fault injection and the Flower adapter
def test_fault_mod_crashes_or_delays_without_sleeping():
    cfg = strategy(**{"federation.fault_schedule": '["1:0","2:0:timeout"]', "federation.round_timeout_s": 30}).cfg
    waited = []
    mod = fault_mod(cfg, wait=waited.append)
    context = Context(1, 1, {"partition-id": 0}, RecordDict(), {})

    def train(round_):
        msg = Message(RecordDict({"config": ConfigRecord({"server-round": round_})}), 1, "train")
        return mod(msg, context, lambda m, c: Message(RecordDict({"metrics": MetricRecord({"ok": 1})}), reply_to=m))

    with pytest.raises(InjectedFault, match="client 0 crashed in round 1"):
        train(1)
    assert train(2).content["metrics"]["ok"] == 1 and waited == [31.0]
    assert train(3).content["metrics"]["ok"] == 1 and waited == [31.0]


def test_flower_version_check_says_what_to_do():
    assert check_flower_version("1.42.7") is None
    assert "Install 'flwr==1.42.*'" in check_flower_version("1.43.0")
