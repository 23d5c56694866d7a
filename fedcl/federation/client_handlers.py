"""What the fedcl ClientApp does with a train or evaluate message: one edge device training on its own
non-stationary stream (the app itself, light to import, is :mod:`fedcl.federation.client_app`).

Each call is ephemeral; the frozen backbone and the data live in the worker
(:mod:`fedcl.builder`), and per-client progress lives in ``context.state``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message

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
from fedcl.federation.client_state import StateStamp, load_client_state, save_client_state
from fedcl.federation.codec import decode, encode, encode_update
from fedcl.federation.node import data_root, partition_id, reply
from fedcl.federation.factors import accepts_factors, attach_factors, gram_rows, record_gram_rows
from fedcl.federation.pending import PendingStatistics
from fedcl.federation.profiles import client_profile, is_unavailable
from fedcl.federation.settings import FedRunConfig
from fedcl.learner import Learner

STATE_KEY = "fedcl-client"
PLUGIN_STATE_PREFIX = "fedcl-plugin-"


def _global_model_learner(cfg: FedRunConfig, msg: Message, pid: int, server_round: int, root: str | None = None):
    """The received global model in a learner that knows the tasks this client has seen."""
    limit_threads(cfg)
    benchmark = benchmark_for(with_local_data(cfg, root))
    model, method = build_model(cfg, benchmark)
    # the learner first: its method unfreezes what it trains, which decides what the model exchanges
    learner = build_learner(cfg, model, method, benchmark, derived_seed(cfg.seed, pid, server_round))
    sums_down = int(msg.content["config"].get("sums-down", 1))
    received = decode(msg.content["arrays"], model.exchanged_state(), source="global model",
                      optional=frozenset() if sums_down else frozenset(sum_keys(model)))
    load_state(model, received)
    # sums the server kept: the client starts them at zero (the fresh model's) and replies with its changes; their
    # reference is a read-only zero view (no copy of a 6.6 MB Gram per message; writing to it would raise)
    received = {**{k: zeros_like_view(v) for k, v in model.exchanged_state().items() if k not in received}, **received}
    seen = seen_tasks(cfg, pid, server_round)
    model.seen_tasks = list(seen)
    learner.seen_classes.update(c for t in seen for c in benchmark.task_classes[t])
    return benchmark, model, learner, seen, received


def zeros_like_view(t: torch.Tensor) -> torch.Tensor:
    """Zeros of ``t``'s shape and dtype, as a broadcast view of one element (no memory, read-only)."""
    return torch.zeros((), dtype=t.dtype, device=t.device).expand(t.shape)


def state_dir(context: Context, default: str | Path | None) -> Path | None:
    """Where this client keeps its state on disk: ``--node-config 'state-dir="..."'``, else the simulation's folder."""
    folder = context.node_config.get("state-dir") or default
    return Path(str(folder)) if folder else None


@dataclass(frozen=True)
class ClientDisk:
    """How a client keeps its state between rounds, as one message tells it: the folder (None: nowhere), which
    saved states belong to this run (:class:`StateStamp`), whether each file is flushed as it is written, and the
    server's last checkpointed round (the state a resume from it loads is kept; unflushed files up to it are on disk)."""

    folder: Path | None
    stamp: StateStamp
    synced: bool
    checkpoint_round: int | None

    @classmethod
    def of(cls, cfg: FedRunConfig, context: Context, config, default: str | Path | None) -> ClientDisk:
        return cls(state_dir(context, default), StateStamp.from_config(config), syncs_each_state_file(cfg, context, default),
                   keep_since(config))


def restore_client_state(learner: Learner, context: Context, disk: ClientDisk, pid: int, server_round: int) -> None:
    """Plugins' state from earlier rounds (replay buffer, Fisher information, old model): from this run's
    ``context.state``, or, in a resumed run whose context starts empty, from the client's own disk."""
    if STATE_KEY not in context.state.config_records and disk.folder is not None and disk.stamp.run_token:
        # unflushed files are on disk up to the server's last checkpoint (it synced before writing it)
        skip_after = None if disk.synced else disk.checkpoint_round or 0
        saved = load_client_state(disk.folder, pid, server_round, disk.stamp, skip_after)
        if saved is not None:
            plugins, rounds_trained = saved
            for name, state in plugins.items():
                context.state[PLUGIN_STATE_PREFIX + name] = ArrayRecord(state)
            context.state[STATE_KEY] = ConfigRecord({"rounds-trained": rounds_trained, "tasks-seen": []})
    for plugin in learner.plugins:
        record = context.state.array_records.get(PLUGIN_STATE_PREFIX + plugin.name)
        if record is not None:
            plugin.load_state_dict(record.to_torch_state_dict())


def syncs_each_state_file(cfg: FedRunConfig, context: Context, default: str | Path | None) -> bool:
    """A node's own ``state-dir`` is flushed file by file; the simulation's folder (``default``) is not, because
    the simulation's server syncs the machine's disk before each checkpoint (same order on disk, one sync), unless
    the clients run on a Ray cluster elsewhere (``federation.ray_address``), whose disks that sync does not reach."""
    return bool(context.node_config.get("state-dir")) or default is None or bool(cfg.federation.ray_address)


def save_client_state_after(learner: Learner, context: Context, disk: ClientDisk, pid: int, server_round: int, rounds_trained: int) -> None:
    states = {}
    for plugin in learner.plugins:
        state = plugin.state_dict()
        if state:
            states[plugin.name] = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            context.state[PLUGIN_STATE_PREFIX + plugin.name] = ArrayRecord(states[plugin.name])
    if disk.folder is not None and disk.stamp.run_token and states:  # methods without client state write nothing
        save_client_state(disk.folder, pid, server_round, states, rounds_trained, disk.stamp, disk.checkpoint_round, disk.synced)


def sum_keys(model) -> list[str]:
    """The exchanged keys holding summed statistics (aggregation kind 'sum')."""
    return [k for k, kind in model.aggregation_kinds().items() if kind == "sum"]


def attach_pending(learner: Learner) -> PendingStatistics | None:
    """A statistical head's learner carries its unconfirmed statistics as plugin state (:mod:`fedcl.federation.pending`)."""
    if not learner.model.head.gathers_statistics:
        return None
    pending = PendingStatistics()
    learner.plugins.append(pending)
    return pending


def catch_up(cfg: FedRunConfig, learner: Learner, pid: int, tasks: list[int], root: str | None) -> int:
    """Gather every task of ``tasks`` (the client's stream so far) not gathered yet: a client that was not
    sampled (or unavailable) during a task's rounds still adds that task's samples, once. Returns samples added."""
    if not learner.model.head.gathers_statistics:
        return 0
    added = 0
    for task in tasks:
        if task not in learner.gathered.tasks:
            experience = training_experience(cfg, pid, task, root)
            if len(experience):
                added += learner.accumulate_statistics(experience)
    return added


def gathered_changes(model, reference: dict, keys: list[str]) -> tuple[dict, dict, dict]:
    """(exchanged state, change of each 'sum' key since ``reference``, Gram rows). When the rows observed
    since ``reference`` are the whole Gram change (:func:`gram_rows`), the packed Gram is neither folded nor
    subtracted: the change is the rows (the exchanged state's Gram entry is then stale; do not send it)."""
    rows = gram_rows(model, reference)
    with model.head.gram_unfolded() if rows else nullcontext():
        local = model.exchanged_state()
    return local, {k: local[k].double() - reference[k].double() for k in keys if k not in rows}, rows


def outgoing_state(model, received: dict, pending: PendingStatistics | None, server_round: int,
                   factors: bool = False) -> tuple[dict, dict]:
    """(exchanged state, Gram factors) to send: 'sum' keys as the received global plus every unconfirmed change
    (this round's new statistics included), or left out when there is none (the server then changes nothing);
    with ``factors``, a Gram change from few samples is left out of the state and sent as a factor instead
    (:mod:`fedcl.federation.factors`)."""
    if pending is None:
        return model.exchanged_state(), {}
    keys = sum_keys(model)
    local, new_changes, rows = gathered_changes(model, received, keys)
    pending.add(new_changes, rows)
    changes, factored = pending.send(server_round, factors)
    for k in keys:
        if k in changes:
            local[k] = (received[k].double() + changes[k]).to(local[k].dtype)
        else:
            del local[k]
    return local, factored


def handle_train(cfg: FedRunConfig, msg: Message, context: Context, default_state_dir: str | Path | None = None) -> Message:
    if int(msg.content["config"].get("collect", 0)):
        return handle_collect(cfg, msg, context, default_state_dir)
    pid = partition_id(context)
    server_round = int(msg.content["config"]["server-round"])
    task = schedule_for(cfg).task(pid, server_round)
    root = data_root(context)
    experience = training_experience(cfg, pid, task, root)
    profile = client_profile(cfg.federation.device_profiles, pid, cfg.seed)
    base = {"partition-id": pid, "task": task, "num-examples": 0, "train-time-s": 0.0, "loss": 0.0}
    if is_unavailable(profile, pid, server_round, cfg.seed) or len(experience) == 0:
        return reply(msg, {**base, "unavailable": int(len(experience) > 0)})

    _, model, learner, seen, received = _global_model_learner(cfg, msg, pid, server_round, root)
    config = msg.content["config"]
    disk = ClientDisk.of(cfg, context, config, default_state_dir)
    pending = attach_pending(learner)
    restore_client_state(learner, context, disk, pid, server_round)
    if pending is not None:
        pending.confirm(int(config.get("stats-accepted-round", 0)))
    record_gram_rows(model, config)
    stats = learner.train_experience(experience)
    catch_up(cfg, learner, pid, seen, root)
    state, factors = outgoing_state(model, received, pending, server_round, accepts_factors(config))
    update = attach_factors(encode_update(state, received, cfg.federation.quantization, derived_seed(cfg.seed, pid, server_round)),
                            factors)

    record = context.state.config_records.get(STATE_KEY, ConfigRecord({"rounds-trained": 0, "tasks-seen": []}))
    record["rounds-trained"] = int(record["rounds-trained"]) + 1
    record["tasks-seen"] = [int(t) for t in seen]
    context.state[STATE_KEY] = record
    save_client_state_after(learner, context, disk, pid, server_round, int(record["rounds-trained"]))

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
    return reply(msg, metrics, update)


def keep_since(config) -> int | None:
    """The server's last checkpointed round: the client keeps the saved state a resume from it would load."""
    return int(config["checkpoint-round"]) if "checkpoint-round" in config else None


def handle_collect(cfg: FedRunConfig, msg: Message, context: Context, default_state_dir: str | Path | None = None) -> Message:
    """The final collect step after the last round: gather the client's seen-but-ungathered tasks and send
    every unconfirmed statistic as a *change* ('sum' keys only; the message carries no sums down).
    The learner's sums start at zero here, so the change is exactly what was gathered."""
    pid = partition_id(context)
    config = msg.content["config"]
    server_round, root = int(config["server-round"]), data_root(context)
    limit_threads(cfg)
    benchmark = benchmark_for(with_local_data(cfg, root))
    model, method = build_model(cfg, benchmark)
    learner = build_learner(cfg, model, method, benchmark, derived_seed(cfg.seed, pid, server_round))
    keys = sum_keys(model)
    load_state(model, decode(msg.content["arrays"], model.exchanged_state(), source="global model", optional=frozenset(keys)))
    pending = attach_pending(learner)
    base = {"partition-id": pid, "collect": 1, "num-examples": 0}
    if pending is None:
        return reply(msg, base)
    disk = ClientDisk.of(cfg, context, config, default_state_dir)
    restore_client_state(learner, context, disk, pid, server_round)
    pending.confirm(int(config.get("stats-accepted-round", 0)))
    record_gram_rows(model, config)
    before = {k: zeros_like_view(v) for k, v in model.exchanged_state().items() if k in keys}  # (no sums came down)
    added = catch_up(cfg, learner, pid, seen_tasks(cfg, pid, int(config["last-round"])), root)
    pending.add(*gathered_changes(model, before, keys)[1:])
    changes, factors = pending.send(server_round, accepts_factors(config))
    record = context.state.config_records.get(STATE_KEY, ConfigRecord({"rounds-trained": 0, "tasks-seen": []}))
    save_client_state_after(learner, context, disk, pid, server_round, int(record["rounds-trained"]))
    return reply(msg, {**base, "num-examples": added}, attach_factors(encode(changes), factors) if changes or factors else None)


def handle_evaluate(cfg: FedRunConfig, msg: Message, context: Context) -> Message:
    """Local view: accuracy of the global model on the test data of the tasks this client has seen."""
    pid = partition_id(context)
    server_round = int(msg.content["config"]["server-round"])
    benchmark, _, learner, seen, _ = _global_model_learner(cfg, msg, pid, server_round, data_root(context))
    tests = [benchmark.test_stream[t] for t in seen]
    accs = learner.evaluate(tests)
    n = sum(len(e) for e in tests)
    accuracy = sum(a * len(e) for a, e in zip(accs, tests)) / max(n, 1)
    return reply(msg, {"partition-id": pid, "accuracy": accuracy, "num-examples": n})
