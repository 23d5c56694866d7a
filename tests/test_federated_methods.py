"""Every method and plugin in a tiny federation (in-process backend: real ClientApp, ServerApp,
strategy and Flower Messages rebuilt from their wire bytes), checking what each may change."""

import copy

import pytest
import torch

from fedcl.config import build_config
from flwr.clientapp import ClientApp

from fedcl.federation.client_app import build_client_app, handle_query
from fedcl.federation.client_handlers import PLUGIN_STATE_PREFIX, handle_train
from fedcl.federation.inline import FIRST_NODE_ID, run_inline
from fedcl.builder import benchmark_for, build_learner, build_model, client_stream, schedule_for
from fedcl.federation.server_app import build_server_app
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_federated
from fedcl.state_files import GLOBAL_MODEL_FILE, load_state_file

TINY = ["federation.backend=inline", "data.num_tasks=2", "data.max_train_per_class=24", "data.max_test_per_class=20",
        "federation.num_clients=3", "federation.rounds_per_task=2", "federation.boundary_jitter=0",
        'federation.device_profiles=["server"]', "federation.partition=iid", "federation.evaluate_clients=false"]


def config(*overrides) -> FedRunConfig:
    return build_config("fedsmoke", None, TINY + list(overrides), schema=FedRunConfig)


def initial_state(cfg):
    """What the server starts from: the model after its method chose what trains."""
    model, method = build_model(cfg, benchmark_for(cfg))
    build_learner(cfg, model, method, benchmark_for(cfg), cfg.seed)
    return {k: v.clone() for k, v in model.exchanged_state().items()}


def changed_keys(before, after):
    return {k for k in after if not torch.equal(before[k].float(), after[k].float())}


LIGHT = "transform. head.".split()


@pytest.mark.parametrize("name, overrides, sent_prefixes", [
    ("input_tuning", [], LIGHT),
    ("head_only", ["method.name=head_only"], ["head."]),
    ("ncm", ["method.name=head_only", "model.head.name=ncm"], ["head."]),
    # the fine-tuning methods are not asked to learn here (see below): one round per task shows what they exchange
    ("partial_finetune", ["method.name=partial_finetune", "method.options.stages=1", "federation.rounds_per_task=1"], ["head.", "backbone.model.blocks.6.", "backbone.model.conv_head", "backbone.model.bn2"]),
    ("finetune", ["method.name=finetune", "federation.rounds_per_task=1"], ["head.", "backbone."]),
    ("ewc", ["method.plugins.ewc.strength=100.0", "method.plugins.ewc.fisher_samples=2"], LIGHT),
    ("lwf", ["method.plugins.lwf={}"], LIGHT),
    ("replay", ["method.plugins.replay.buffer_size=16"], LIGHT),
    ("fedprox", ["federation.strategy=fedprox", "federation.proximal_mu=0.1"], LIGHT),
    ("joint", ["method.plugins.joint={}"], LIGHT),
])
def test_each_method_runs_federated_and_changes_only_its_parameters(tmp_path, name, overrides, sent_prefixes):
    cfg = config(*overrides)
    before = initial_state(cfg)
    results = run_federated(cfg, tmp_path, quiet=True)
    after = load_state_file(tmp_path / GLOBAL_MODEL_FILE)
    assert set(after) == set(before)
    assert all(k.startswith(tuple(sent_prefixes)) for k in after), f"{name} exchanges more than it trains"
    assert any(k.startswith(tuple(sent_prefixes)) for k in changed_keys(before, after))
    if name != "finetune":  # only full fine-tuning may send the backbone's earlier stages
        assert not any(k.startswith("backbone.model.blocks.0") for k in after)
    assert results["rejected_updates"] == []
    if not name.endswith("finetune"):  # fine-tuning a whole backbone on 16 images per client and task does not learn
        assert results["final_avg_accuracy"] > 0.35  # 4 classes: chance is 0.25
    total = results["communication"]["bytes_total"]
    if name == "ncm":  # summed statistics go up once per task (and a collect step), not every round
        assert total / 3 >= results["trainable_bytes"] * results["num_tasks"]  # each client's sums, counted
    else:
        per_client_round = total / (results["rounds"] * 3) / 2
        assert per_client_round >= results["trainable_bytes"]  # every exchanged byte is counted, each way
    if name not in ("finetune",):
        assert results["communication"]["fraction_of_full_model"] < 0.5


def test_plugin_state_persists_in_each_clients_context_across_rounds(tmp_path):
    cfg = config("method.plugins.ewc.fisher_samples=2", "method.plugins.replay.buffer_size=10")
    grid = run_inline(build_server_app(cfg, tmp_path), build_client_app(cfg), cfg.federation.num_clients)
    schedule = schedule_for(cfg)
    for pid in range(cfg.federation.num_clients):
        state = grid.contexts[FIRST_NODE_ID + pid].state
        ewc = state.array_records[PLUGIN_STATE_PREFIX + "ewc"].to_torch_state_dict()
        # after moving to its second task, the client consolidated the first task's Fisher
        assert int(ewc["last_task"]) == schedule.task(pid, cfg.num_rounds)
        assert any(k.startswith("fisher/") for k in ewc) and all(not k.split("/")[1].startswith("backbone.") for k in ewc if "/" in k)
        replay = state.array_records[PLUGIN_STATE_PREFIX + "replay"].to_torch_state_dict()
        assert len(replay["labels"]) <= 10
        own = torch.cat([e.data.images for e in client_stream(cfg, pid)]).flatten(1)
        for img in replay["images"].flatten(1):  # only this client's own samples
            assert (own == img).all(1).any()
        assert set(replay["task_ids"].tolist()) <= set(schedule.seen_tasks(pid, cfg.num_rounds))


def test_ncm_global_means_equal_count_weighted_client_means(tmp_path, lite0):
    cfg = config("method.name=head_only", "model.head.name=ncm", "federation.rounds_per_task=1")
    run_federated(cfg, tmp_path, quiet=True)
    after = load_state_file(tmp_path / GLOBAL_MODEL_FILE)
    benchmark = benchmark_for(cfg)
    backbone = copy.deepcopy(lite0).eval()
    from fedcl.data.preprocessing import to_model_input

    sums = torch.zeros(benchmark.num_classes, backbone.feature_dim, dtype=torch.float64)
    counts = torch.zeros(benchmark.num_classes, dtype=torch.float64)
    client_means = []
    for pid in range(cfg.federation.num_clients):
        for e in client_stream(cfg, pid):
            if len(e) == 0:
                continue
            with torch.inference_mode():
                f = backbone(to_model_input(e.data.images, cfg.data.image_size, "cpu")).double()
            for c in e.data.labels.unique().tolist():
                rows = f[e.data.labels == c]
                client_means.append((c, rows.mean(0), len(rows)))
    for c, mean, n in client_means:  # count-weighted average of the clients' class means, by hand
        sums[c] += mean * n
        counts[c] += n
    assert torch.equal(after["head.counts"], counts)
    seen = counts > 0
    expected = sums[seen] / counts[seen].unsqueeze(1)
    got = after["head.sums"][seen] / after["head.counts"][seen].unsqueeze(1)
    assert torch.allclose(got, expected, atol=1e-4)


def test_a_node_with_its_own_data_root_trains_on_all_of_it(tmp_path, fmnist):
    """--node-config data-root=...: that node trains on its own files, the others on their partitions."""
    from fedcl.data.idx import write_idx

    local = tmp_path / "node1-data"
    local.mkdir()
    for split, prefix, per_class in (("train", "train", 7), ("test", "t10k", 5)):
        arrays = getattr(fmnist, split)
        keep = torch.cat([(arrays.labels == c).nonzero().flatten()[:per_class] for c in range(10)])
        write_idx(local / f"{prefix}-images-idx3-ubyte", arrays.images[keep, 0].numpy())
        write_idx(local / f"{prefix}-labels-idx1-ubyte", arrays.labels[keep].numpy().astype("uint8"))
    cfg = config("federation.rounds_per_task=1")
    seen_examples = {}
    app = ClientApp()

    @app.train()  # the real handler, recording what each node trained on
    def spy(msg, context):
        reply = handle_train(cfg, msg, context)
        seen_examples.setdefault(int(context.node_config["partition-id"]), []).append(int(reply.content["metrics"]["num-examples"]))
        return reply

    app.query()(handle_query)  # the server first asks each node for its partition id

    run_inline(build_server_app(cfg, tmp_path / "out"), app, 3, node_configs=[{}, {"data-root": str(local)}, {}])
    assert seen_examples[1] == [7 * 2, 7 * 2]  # 2 classes per task, all 7 local samples of each, both rounds
    assert all(sum(v) > 0 for v in seen_examples.values())


def test_a_run_with_crashing_clients_completes_and_reports_failures(tmp_path):
    cfg = config("federation.num_clients=5", "federation.fault_rate=0.4", "federation.evaluate_clients=false")
    results = run_federated(cfg, tmp_path, quiet=True)
    rows = results["communication"]["per_round"]
    failed = [row["clients_failed"] for row in rows]
    assert sum(failed) >= 3 and all(f + row["clients_trained"] <= 5 for f, row in zip(failed, rows))
    assert sum(1 for r in results["rejected_updates"] if "crashed" in r) == sum(failed)
    assert results["final_avg_accuracy"] > 0.35


@pytest.mark.parametrize("head", ["linear", "ridge"])
def test_a_frozen_client_encodes_each_sample_once_per_run(tmp_path, monkeypatch, head):
    """Head-only clients (no transform is learned) keep their backbone features across rounds and epochs: with
    2 rounds per task and 2 local epochs, the backbone still sees each training sample once (a statistical
    head's samples all before clients train, in the inline backend's prefetch)."""
    from fedcl import builder
    from fedcl.backbones.base import FrozenBackbone
    from fedcl.federation import client_handlers

    builder.shared_feature_cache.cache_clear()  # a cold cache, whatever ran before in this process
    cfg = config("method.name=head_only", f"model.head.name={head}", "federation.local_epochs=2")
    seen, role = {"train": 0, "prefetch": 0}, ["server"]
    forward = FrozenBackbone.forward

    def counting_forward(self, images):
        seen[role[0]] = seen.get(role[0], 0) + int(images.shape[0])
        return forward(self, images)

    def counted(name, function):
        def call(*args, **kwargs):
            role[0] = name
            try:
                return function(*args, **kwargs)
            finally:
                role[0] = "server"
        return call

    monkeypatch.setattr(FrozenBackbone, "forward", counting_forward)
    monkeypatch.setattr(client_handlers, "handle_train", counted("train", client_handlers.handle_train))
    monkeypatch.setattr(builder, "prefetch_client_features", counted("prefetch", builder.prefetch_client_features))
    results = run_federated(cfg, tmp_path, quiet=True)
    samples = sum(len(e) for c in range(3) for e in client_stream(cfg, c))
    assert results["final_avg_accuracy"] > 0.4
    assert seen["train"] + seen["prefetch"] == samples, (seen, samples)
    assert seen["prefetch"] == (samples if head == "ridge" else 0), seen


def _statistics_run(tmp_path, monkeypatch, prefetch: bool):
    """Head buffers, accuracy and training-time encode calls of a ridge run, with or without the prefetch."""
    from fedcl import builder
    from fedcl.backbones.base import FrozenBackbone
    from fedcl.federation import client_handlers

    builder.shared_feature_cache.cache_clear()
    cfg = config("method.name=head_only", "model.head.name=ridge", "federation.num_clients=6", "federation.partition=dirichlet")
    calls, role = {"train": 0}, ["server"]
    forward, train = FrozenBackbone.forward, client_handlers.handle_train

    def counting_forward(self, images):
        calls[role[0]] = calls.get(role[0], 0) + 1
        return forward(self, images)

    def counted_train(*args, **kwargs):
        role[0] = "train"
        try:
            return train(*args, **kwargs)
        finally:
            role[0] = "server"

    monkeypatch.setattr(FrozenBackbone, "forward", counting_forward)
    monkeypatch.setattr(client_handlers, "handle_train", counted_train)
    if not prefetch:
        monkeypatch.setattr(builder, "prefetch_client_features", lambda cfg: 0)
    results = run_federated(cfg, tmp_path, quiet=True)
    monkeypatch.undo()
    state = load_state_file(tmp_path / GLOBAL_MODEL_FILE)
    return {k: v for k, v in state.items() if k.startswith("head.")}, results["final_avg_accuracy"], calls["train"]


def test_prefetched_features_give_the_same_head_with_fewer_encodes(tmp_path, monkeypatch):
    """The inline prefetch encodes every client's samples in large batches before clients train: the summed
    statistics equal the one-client-at-a-time run's to float tolerance (eval-mode backbone: no batch
    dependence, only float rounding), the accuracy is the same, and clients run the backbone no more."""
    plain, plain_accuracy, plain_calls = _statistics_run(tmp_path / "plain", monkeypatch, prefetch=False)
    fetched, fetched_accuracy, fetched_calls = _statistics_run(tmp_path / "fetched", monkeypatch, prefetch=True)
    assert plain_calls > 0 and fetched_calls == 0, (plain_calls, fetched_calls)
    assert set(plain) == set(fetched) and "head.gram" in plain
    for key in plain:
        torch.testing.assert_close(fetched[key], plain[key], rtol=1e-5, atol=1e-6 * float(plain[key].abs().max()))
    assert fetched_accuracy == plain_accuracy
