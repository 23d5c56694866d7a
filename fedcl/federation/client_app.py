"""The fedcl ClientApp: one edge device training on its own non-stationary stream.

Each call is ephemeral; the frozen backbone and the data live in the worker
(:mod:`fedcl.builder`), and per-client progress lives in ``context.state``.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcl.builder import (
    backbone_fingerprint,
    benchmark_for,
    build_learner,
    build_model,
    derived_seed,
    limit_threads,
    load_state,
    schedule_for,
    seen_tasks,
    training_experience,
    with_local_data,
)
from fedcl.federation.app_config import resolve_config
from fedcl.federation.client_state import load_client_state, save_client_state
from fedcl.federation.codec import decode, encode_update
from fedcl.federation.faults import fault_mod, has_faults
from fedcl.federation.profiles import client_profile, is_unavailable
from fedcl.federation.settings import FedRunConfig
from fedcl.learner import Learner

STATE_KEY = "fedcl-client"
PLUGIN_STATE_PREFIX = "fedcl-plugin-"


def partition_id(context: Context) -> int:
    """The client's index: its partition of the shared dataset, its task schedule and its device profile."""
    try:
        return int(context.node_config["partition-id"])
    except KeyError:
        raise ValueError("node config has no 'partition-id' (pass --node-config 'partition-id=N num-partitions=M')") from None


def data_root(context: Context) -> str | None:
    """``--node-config 'data-root="/data/cam"'``: the node trains on its own dataset there (same layout as data.root)."""
    root = context.node_config.get("data-root")
    return str(root) if root else None


def _reply(msg: Message, metrics: dict, arrays=None) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content=content, reply_to=msg)


def _global_model_learner(cfg: FedRunConfig, msg: Message, pid: int, server_round: int, root: str | None = None):
    """The received global model in a learner that knows the tasks this client has seen."""
    limit_threads(cfg)
    benchmark = benchmark_for(with_local_data(cfg, root))
    model, method = build_model(cfg, benchmark)
    # the learner first: its method unfreezes what it trains, which decides what the model exchanges
    learner = build_learner(cfg, model, method, benchmark, derived_seed(cfg.seed, pid, server_round))
    received = decode(msg.content["arrays"], model.exchanged_state(), source="global model")
    load_state(model, received)
    seen = seen_tasks(cfg, pid, server_round)
    model.seen_tasks = list(seen)
    learner.seen_classes.update(c for t in seen for c in benchmark.task_classes[t])
    return benchmark, model, learner, seen, received


def state_dir(context: Context, default: str | Path | None) -> Path | None:
    """Where this client keeps its state on disk: ``--node-config 'state-dir="..."'``, else the simulation's folder."""
    folder = context.node_config.get("state-dir") or default
    return Path(str(folder)) if folder else None


def restore_client_state(learner: Learner, context: Context, folder: Path | None, pid: int, server_round: int, run_token: str) -> None:
    """Plugins' state from earlier rounds (replay buffer, Fisher information, old model): from this run's
    ``context.state``, or, in a resumed run whose context starts empty, from the client's own disk."""
    if STATE_KEY not in context.state.config_records and folder is not None and run_token:
        saved = load_client_state(folder, pid, server_round, run_token)
        if saved is not None:
            plugins, rounds_trained = saved
            for name, state in plugins.items():
                context.state[PLUGIN_STATE_PREFIX + name] = ArrayRecord(state)
            context.state[STATE_KEY] = ConfigRecord({"rounds-trained": rounds_trained, "tasks-seen": []})
    for plugin in learner.plugins:
        record = context.state.array_records.get(PLUGIN_STATE_PREFIX + plugin.name)
        if record is not None:
            plugin.load_state_dict(record.to_torch_state_dict())


def save_client_state_after(learner: Learner, context: Context, folder: Path | None, pid: int, server_round: int,
                            rounds_trained: int, run_token: str) -> None:
    states = {}
    for plugin in learner.plugins:
        state = plugin.state_dict()
        if state:
            states[plugin.name] = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            context.state[PLUGIN_STATE_PREFIX + plugin.name] = ArrayRecord(states[plugin.name])
    if folder is not None and run_token and states:  # methods without client state write nothing
        save_client_state(folder, pid, server_round, states, rounds_trained, run_token)


def handle_train(cfg: FedRunConfig, msg: Message, context: Context, default_state_dir: str | Path | None = None) -> Message:
    pid = partition_id(context)
    server_round = int(msg.content["config"]["server-round"])
    task = schedule_for(cfg).task(pid, server_round)
    root = data_root(context)
    experience = training_experience(cfg, pid, task, root)
    profile = client_profile(cfg.federation.device_profiles, pid, cfg.seed)
    base = {"partition-id": pid, "task": task, "num-examples": 0, "train-time-s": 0.0, "loss": 0.0}
    if is_unavailable(profile, pid, server_round, cfg.seed) or len(experience) == 0:
        return _reply(msg, {**base, "unavailable": int(len(experience) > 0)})

    _, model, learner, seen, received = _global_model_learner(cfg, msg, pid, server_round, root)
    folder = state_dir(context, default_state_dir)
    run_token = str(msg.content["config"].get("run-token", ""))
    restore_client_state(learner, context, folder, pid, server_round, run_token)
    stats = learner.train_experience(experience)

    record = context.state.config_records.get(STATE_KEY, ConfigRecord({"rounds-trained": 0, "tasks-seen": []}))
    record["rounds-trained"] = int(record["rounds-trained"]) + 1
    record["tasks-seen"] = [int(t) for t in seen]
    context.state[STATE_KEY] = record
    save_client_state_after(learner, context, folder, pid, server_round, int(record["rounds-trained"]), run_token)

    metrics = {
        **base,
        "num-examples": len(experience),
        "train-time-s": stats["train_time_s"],
        "loss": stats["loss"],
        # samples in the loss per class and per task, replayed and distilled ones included: the server's weights
        "class-counts": stats["class_counts"],
        "task-examples": stats["task_counts"],
        "rounds-trained": int(record["rounds-trained"]),
        # the server checks every client uses the same frozen backbone (a trained one is not checked)
        "backbone-crc": -1 if learner.method.trains_backbone else backbone_fingerprint(cfg),
    }
    update = encode_update(model.exchanged_state(), received, cfg.federation.quantization, derived_seed(cfg.seed, pid, server_round))
    return _reply(msg, metrics, update)


def handle_evaluate(cfg: FedRunConfig, msg: Message, context: Context) -> Message:
    """Local view: accuracy of the global model on the test data of the tasks this client has seen."""
    pid = partition_id(context)
    server_round = int(msg.content["config"]["server-round"])
    benchmark, _, learner, seen, _ = _global_model_learner(cfg, msg, pid, server_round, data_root(context))
    tests = [benchmark.test_stream[t] for t in seen]
    accs = learner.evaluate(tests)
    n = sum(len(e) for e in tests)
    accuracy = sum(a * len(e) for a, e in zip(accs, tests)) / max(n, 1)
    return _reply(msg, {"partition-id": pid, "accuracy": accuracy, "num-examples": n})


def handle_query(msg: Message, context: Context) -> Message:
    """The server asks who this node is: its partition id (it samples and reports by partition, not node id),
    and whether it has its own data (then only the node itself can measure its local accuracy)."""
    return _reply(msg, {"partition-id": partition_id(context), "own-data": int(data_root(context) is not None)})


def build_client_app(cfg: FedRunConfig | None = None, client_state_dir: str | Path | None = None) -> ClientApp:
    """A ClientApp bound to ``cfg``, or reading the run config when ``cfg`` is None (``flwr run``).
    ``client_state_dir``: where simulated clients keep their state (a node's ``state-dir`` takes precedence).
    A simulation whose config asks for faults gets the fault-injection mod (:mod:`fedcl.federation.faults`)."""
    app = ClientApp(mods=[fault_mod(cfg)] if cfg is not None and has_faults(cfg) else [])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return handle_train(resolve_config(cfg, context), msg, context, client_state_dir)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return handle_query(msg, context)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(resolve_config(cfg, context), msg, context)

    return app


app = build_client_app()
