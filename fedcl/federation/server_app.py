"""The fedcl ServerApp: runs the rounds, evaluates the global model after every round
on every task's test data, checkpoints, and writes ``results.json``."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedcl.optional import require_accountant, require_ray
from fedcl.builder import benchmark_for, build_learner, build_model, client_stream, load_state, schedule_for, seen_tasks
from fedcl.config.schema import STATISTICAL_HEADS
from fedcl.errors import ConfigError, FedclError
from fedcl.federation.accounting import message_bytes
from fedcl.federation.app_config import resolve_config
from fedcl.federation.checkpoint import (CHECKPOINT_FILE, STAGED_CHECKPOINT_FILE, Checkpoint, CheckpointError, check_state, load_checkpoint,
                                         resume_path, save_checkpoint)
from fedcl.federation.client_state import StateStamp
from fedcl.federation.codec import encode
from fedcl.federation.factors import factors_allowed, gram_dims
from fedcl.federation.privacy import epsilons, noise_std
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.strategy import FedCLStrategy
from fedcl.guards import check_global_state
from fedcl.metrics import peak_memory_mb, summarize
from fedcl.outputs import promote_all, staged, write_text_atomic
from fedcl.runner import RESULTS_FILE, describe_run, write_results
from fedcl.progress import round_done
from fedcl.state_files import GLOBAL_MODEL_FILE, save_state

#: written by the ServerApp when the run fails on the user's input, read back by ``fedcl simulate``
ERROR_FILE = "error.json"


def wait_for_nodes(grid: Grid, needed: int, timeout_s: float) -> int:
    """Wait until ``needed`` nodes are connected; fail with a clear error instead of waiting forever."""
    deadline = time.monotonic() + timeout_s
    while (connected := len(list(grid.get_node_ids()))) < needed:
        if time.monotonic() > deadline:
            raise FedclError(
                f"only {connected} of the {needed} required SuperNodes connected within {timeout_s:.0f} s "
                f"(federation.min_available_nodes / num_clients); start more nodes or lower the minimum"
            )
        time.sleep(0.5)
    return connected


def server_model(cfg: FedRunConfig):
    """The server's benchmark, model, method and initial global (exchanged) state; no learner needed."""
    benchmark = benchmark_for(cfg)
    model, method = build_model(cfg, benchmark)
    global_state = {k: v.detach().clone() for k, v in model.exchanged_state().items()}
    return benchmark, model, method, global_state


def checked_checkpoint(cfg: FedRunConfig, path: Path, global_state: dict[str, torch.Tensor]) -> tuple[Checkpoint, dict[str, torch.Tensor]]:
    """The checkpoint at ``path``, checked against the config and the model (clear errors otherwise)."""
    ckpt = load_checkpoint(path, cfg.to_dict(), cfg.num_rounds)
    checked = check_state(ckpt, "global", global_state, path)
    if "strategy" not in ckpt.state or "run_token" not in ckpt.state:
        raise CheckpointError(f"checkpoint {path} lacks the server state (strategy, run token)")
    return ckpt, checked


def refuse_single_device_methods(cfg: FedRunConfig) -> None:
    """Methods that work on one device only, refused in one line before any federated work (the schema
    serves single-device runs too, so this is checked here)."""
    if cfg.method.name == "input_tuning" and cfg.model.head.name in STATISTICAL_HEADS:
        raise ConfigError(f"method.name=input_tuning with the {cfg.model.head.name.upper()} head adapts the transform with a temporary "
                          "linear head on one device first; federated runs do not support it: use method.name=head_only")


def require_extras(cfg: FedRunConfig) -> None:
    """The optional packages the server of this run needs, checked before any work (one line naming the extra)."""
    if cfg.federation.dp_noise_multiplier:
        require_accountant()


def preflight(cfg: FedRunConfig, out: Path) -> None:
    """Everything that can fail on the user's input, checked before any simulation starts: data, backbone
    and weights, and (when resuming) the checkpoint. Caches make the ServerApp's own build free."""
    refuse_single_device_methods(cfg)
    require_extras(cfg)
    if cfg.federation.backend == "ray":
        require_ray()
    # partitions the shared data for every client (kept for the run's processes; needs flwr-datasets unless on disk)
    client_stream(cfg, 0)
    *_, global_state = server_model(cfg)
    if cfg.federation.resume:
        checked_checkpoint(cfg, resume_path(out), global_state)


def client_eval_due(cfg: FedRunConfig, server_round: int) -> bool:
    """Per-client (local) accuracy of the final global model, and every k rounds if asked."""
    every = cfg.federation.client_eval_every
    return cfg.federation.evaluate_clients and (server_round == cfg.num_rounds or bool(every and server_round % every == 0))


class ServerEvaluation:
    """The global model's accuracy on every task's test data, after the rounds where it is needed
    (every round if asked; else each task boundary, every client's own boundaries included)."""

    def __init__(self, cfg: FedRunConfig, benchmark, model, method) -> None:
        self.cfg, self.benchmark, self.model = cfg, benchmark, model
        self.learner = build_learner(cfg, model, method, benchmark, cfg.seed)
        self.schedule = schedule_for(cfg)
        self.boundaries = self.schedule.boundary_rounds(cfg.federation.num_clients)
        ends = {e for c in range(cfg.federation.num_clients) for e in client_task_ends(self.schedule, c)}
        self.rounds = set(self.boundaries) | ends
        self.accuracy: dict[int, list[float]] = {}

    def __call__(self, server_round: int, global_state: dict[str, torch.Tensor]) -> None:
        if not self.cfg.federation.evaluate_every_round and server_round not in self.rounds and server_round != 0:
            return
        load_state(self.model, global_state)
        f = self.cfg.federation
        seen = sorted({t for c in range(f.num_clients) for t in (seen_tasks(self.cfg, c, server_round) if server_round else [])})
        self.model.seen_tasks = seen
        self.learner.seen_classes = {c for t in seen for c in self.benchmark.task_classes[t]}
        self.accuracy[server_round] = self.learner.evaluate(self.benchmark.test_stream)


def first_reply_wait_s(federation) -> float:
    """How long a new node's first reply (its partition id) is awaited: the longer of ``node_wait_s`` and
    ``round_timeout_s``; a node's first message may have to start its ClientApp process and import its
    packages first."""
    return max(federation.node_wait_s, federation.round_timeout_s)


def client_task_ends(schedule, client: int) -> list[int]:
    """The round after which ``client`` has finished each position of its stream."""
    starts = schedule.starts(client)
    return [s - 1 for s in starts[1:]] + [schedule.num_rounds]


def local_accuracies(cfg: FedRunConfig, benchmark, per_task: list[float], server_round: int, clients: list[int]) -> dict[int, float]:
    """A client's local accuracy on the shared test data: the server's per-task accuracies averaged over
    the tasks the client has seen, weighted by their test sizes (computed once, not once per client).
    The server's logit mask covers every task any client has seen, a client's own only its tasks:
    with jittered boundaries or per-client task orders the two can differ slightly."""
    out = {}
    for c in clients:
        tasks = seen_tasks(cfg, c, server_round)
        sizes = [len(benchmark.test_stream[t]) for t in tasks]
        out[c] = sum(per_task[t] * n for t, n in zip(tasks, sizes)) / max(sum(sizes), 1)
    return out


def run_rounds(cfg: FedRunConfig, grid: Grid, strategy: FedCLStrategy, evaluation: ServerEvaluation, first_round: int,
               stamp: StateStamp, checkpoint) -> None:
    """Rounds ``first_round``..R: discover new nodes, train, aggregate, evaluate, checkpoint."""
    f = cfg.federation
    for server_round in range(first_round, cfg.num_rounds + 1):
        log(INFO, "[ROUND %s/%s]", server_round, cfg.num_rounds)
        strategy.discover(grid, first_reply_wait_s(f))
        train_config = ConfigRecord({"local-epochs": f.local_epochs, **stamp.config()})
        replies = grid.send_and_receive(strategy.train_messages(server_round, train_config, grid), timeout=f.round_timeout_s)
        strategy.aggregate_train(server_round, replies)
        check_global_state(strategy.global_state, server_round, cfg.to_dict())
        due = client_eval_due(cfg, server_round)
        if due:
            evaluation.rounds.add(server_round)
        evaluation(server_round, strategy.global_state)
        if due:
            evaluate_clients(cfg, grid, strategy, evaluation, server_round)
        round_done(server_round, cfg.num_rounds, evaluation.accuracy.get(server_round))
        if f.checkpoint_every and (server_round % f.checkpoint_every == 0 or server_round == cfg.num_rounds):
            checkpoint(server_round)
    if strategy.sum_keys and not strategy.collected:
        collect_step(cfg, grid, strategy, evaluation, stamp, checkpoint)


def collect_step(cfg: FedRunConfig, grid: Grid, strategy: FedCLStrategy, evaluation: ServerEvaluation, stamp: StateStamp,
                 checkpoint) -> None:
    """After the last round, every connected client that may hold statistics the server lacks (all but the
    :func:`settled_clients`) sends those it has not sent yet (tasks it saw but was never sampled or available
    to gather, and replies that were lost or rejected); they are added to the global sums, the final round is
    evaluated again if any came, and the checkpoint records the step as done. Its bytes are in the ledger as
    round R+1 (no such row when no client was asked)."""
    f, step = cfg.federation, cfg.num_rounds + 1
    strategy.discover(grid, first_reply_wait_s(f))
    # (clients that learn by gradient add statistics every batch: any of them may hold some, so all are asked)
    settled = frozenset() if strategy.sums_down else settled_clients(cfg, strategy.stats_accepted)
    messages = strategy.collect_messages(step, ConfigRecord(stamp.config()), grid, settled)
    stats = strategy.aggregate_collect(step, grid.send_and_receive(messages, timeout=f.round_timeout_s) if messages else [])
    strategy.recorder.round_stats[step] = stats
    check_global_state(strategy.global_state, cfg.num_rounds, cfg.to_dict())
    if stats["clients_contributed"]:  # else the global model is the last round's, already evaluated
        evaluation(cfg.num_rounds, strategy.global_state)
    log(INFO, "fedcl: collect step: %s of %s clients sent statistics", stats["clients_contributed"], stats["clients_asked"])
    if f.checkpoint_every:
        checkpoint(cfg.num_rounds)


def settled_clients(cfg: FedRunConfig, stats_accepted: dict[int, int]) -> frozenset[int]:
    """Clients that hold no statistics the server lacks: the server added an upload of theirs sent after their
    stream reached its last task. (A client that trains first gathers every task it has seen, so its later
    replies carry nothing new; what it holds unconfirmed is what the server already added.)"""
    return frozenset(c for c, r in stats_accepted.items() if r and seen_tasks(cfg, c, r) == seen_tasks(cfg, c, cfg.num_rounds))


def evaluate_clients(cfg: FedRunConfig, grid: Grid, strategy: FedCLStrategy, evaluation: ServerEvaluation, server_round: int) -> None:
    """Local accuracies: nodes with their own test data evaluate themselves; the others' come from the server's."""
    messages = strategy.evaluate_messages(server_round, grid)
    if messages:
        strategy.aggregate_evaluate(server_round, grid.send_and_receive(messages, timeout=cfg.federation.round_timeout_s))
    own = {strategy.population.node_to_client[n] for n in strategy.population.own_data}
    shared = [c for c in sorted(set(strategy.population.node_to_client.values())) if c not in own]
    accs = strategy.recorder.client_accuracy.setdefault(server_round, {})
    accs.update(local_accuracies(cfg, evaluation.benchmark, evaluation.accuracy[server_round], server_round, shared))
    strategy.recorder.client_accuracy[server_round] = dict(sorted(accs.items()))


def start_or_resume(cfg: FedRunConfig, strategy: FedCLStrategy, evaluation: ServerEvaluation, path: Path) -> tuple[int, StateStamp]:
    """(first round, the stamp of the client states this attempt accepts): a fresh run evaluates the untrained model (round 0); a resumed one
    restores the strategy and the accuracies from the checkpoint."""
    if not cfg.federation.resume:
        evaluation(0, strategy.global_state)
        return 1, StateStamp(uuid.uuid4().hex, uuid.uuid4().hex)
    source = resume_path(path.parent)
    ckpt, checked = checked_checkpoint(cfg, source, strategy.global_state)
    adam = {g: ckpt.group(g) for g in ("adam_m", "adam_v")}
    try:
        strategy.load_state_dict(ckpt.state["strategy"], checked, adam["adam_m"], adam["adam_v"])
        evaluation.accuracy.update({int(r): a for r, a in ckpt.state["server_accuracy"].items()})
        first_round, stamp = ckpt.server_round + 1, resumed_stamp(ckpt.state, ckpt.server_round)
        strategy.checkpointed_round = ckpt.server_round
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"checkpoint {source} has damaged server state ({type(exc).__name__}: {str(exc)[:100]})") from None
    log(INFO, "fedcl: resuming after round %s from %s", ckpt.server_round, source)
    return first_round, stamp


def resumed_stamp(state: dict, server_round: int) -> StateStamp:
    """The stamp of a resumed attempt: its clients load no state the checkpoint's attempt saved after the checkpoint
    (nor any that an attempt before it saved after the round the next one resumed from). Raises ValueError or
    TypeError on a malformed entry (the checkpoint is damaged)."""

    def word(value, empty: bool = True) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Za-z_-]{%d,64}" % (0 if empty else 1), value):
            raise ValueError("a run token or attempt is not a word of at most 64 letters, digits, '_' or '-'")
        return value

    earlier = state.get("earlier_attempts", [])
    if not isinstance(earlier, list) or len(earlier) > 10_000:
        raise ValueError("earlier_attempts is not a list of at most 10,000 entries")
    pairs = []
    for entry in earlier:
        attempt, upto = entry  # a pair, or ValueError/TypeError
        if type(upto) is not int or not 0 <= upto <= server_round:
            raise ValueError(f"an earlier attempt's last round is not a round up to {server_round}")
        pairs.append((word(attempt), upto))
    pairs.append((word(state.get("attempt", "")), server_round))
    return StateStamp(word(state["run_token"], empty=False), uuid.uuid4().hex, tuple(pairs))


def run_server(cfg: FedRunConfig, grid: Grid, out: Path | None = None, sync_before_checkpoint: bool = False
               ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Run the federation (resuming from ``out``'s checkpoint if asked); returns the results and the final global state.
    ``sync_before_checkpoint``: flush the machine's disk before each checkpoint (a simulation, whose clients write
    their state unflushed on the same machine: every state a resume from the checkpoint loads is then on disk)."""
    start = time.perf_counter()
    f = cfg.federation
    refuse_single_device_methods(cfg)  # (a deployed ServerApp has no preflight)
    require_extras(cfg)
    benchmark, model, method, global_state = server_model(cfg)
    full_state = {**{f"backbone.{k}": v for k, v in model.backbone.state_dict().items()},
                  **{f"head.{k}": v for k, v in model.head.state_dict().items()}}
    strategy = FedCLStrategy(cfg, global_state, model.aggregation_kinds(), message_bytes(encode(full_state, "none")),
                             backbone_crc=None if method.trains_backbone else model.backbone.fingerprint())
    strategy.factor_dims = gram_dims(model) if factors_allowed(f) else {}  # (before a method swaps the head)
    evaluation = ServerEvaluation(cfg, benchmark, model, method)
    strategy.sums_down = any(len(group["params"]) > 0 for group in evaluation.learner.param_groups)
    wait_for_nodes(grid, f.min_available_nodes or f.num_clients, f.node_wait_s)
    path = Path(out or "runs/federated") / STAGED_CHECKPOINT_FILE  # becomes CHECKPOINT_FILE when the run succeeds
    first_round, stamp = start_or_resume(cfg, strategy, evaluation, path)

    def checkpoint(server_round: int) -> None:
        state, tensors = strategy.state_dict()
        positions = {pid: evaluation.schedule.position(pid, server_round) for pid in range(f.num_clients)}  # where each stream is
        if sync_before_checkpoint:
            os.sync()
        save_checkpoint(path, Checkpoint(server_round, cfg.to_dict(), tensors,
                                         {"strategy": state, "server_accuracy": evaluation.accuracy, "run_token": stamp.run_token,
                                          "attempt": stamp.attempt, "earlier_attempts": [list(e) for e in stamp.earlier],
                                          "stream_positions": positions}))
        strategy.checkpointed_round = server_round

    run_rounds(cfg, grid, strategy, evaluation, first_round, stamp, checkpoint)
    recorder = strategy.recorder
    if not any(stats.get("clients_trained") for stats in recorder.round_stats.values()):
        first = recorder.rejected[0] if recorder.rejected else "no client had data to train on"
        raise FedclError(f"no client update was accepted in any of the {cfg.num_rounds} rounds; the first problem: {first}")
    results = {
        **describe_run(cfg, benchmark, method, model, global_state.values()),
        "mode": "federated",
        "num_clients": f.num_clients,
        "rounds": cfg.num_rounds,
        **accuracy_results(cfg, evaluation),
        **per_client_results(cfg, strategy, evaluation),
        "communication": communication_results(cfg, strategy, evaluation),
        **time_results(cfg, recorder),
        "rejected_updates": recorder.rejected,
        "privacy": privacy_results(cfg, recorder),
        "wall_time_s": round(time.perf_counter() - start, 2),
        **peak_memory_mb(),
    }
    return results, strategy.global_state


def accuracy_results(cfg: FedRunConfig, evaluation: ServerEvaluation) -> dict[str, Any]:
    """The global accuracy matrix and its summary.

    ``accuracy_matrix`` (the global matrix): row i = the global model after ``task_boundary_rounds[i]``
    (every client has finished its i-th task), column j = task id j. With ``task_order = "shared"`` row i
    is after task i and the summary is computed on it. With ``"per_client"`` the tasks a row has learned
    differ by client, so the summary (forgetting, BWT, FWT, incremental accuracy) is the mean over clients
    of each client's own matrix (:func:`client_matrices`); the final accuracy is the same either way.
    FWT compares with round 0 (the untrained global model) where a task can be solved before it is
    learned (not class-incremental)."""
    acc, f = evaluation.accuracy, cfg.federation
    matrix = np.array([acc[r] for r in evaluation.boundaries])
    initial = np.array(acc[0]) if 0 in acc and evaluation.benchmark.scenario != "class_incremental" else None
    if f.task_order == "per_client":
        per = [summarize(*client_matrix(evaluation, c)) for c in range(f.num_clients)]
        summary = {k: (float(np.mean([p[k] for p in per])) if per[0][k] is not None else None) for k in per[0]}
        summary["final_avg_accuracy"] = summarize(matrix)["final_avg_accuracy"]
    else:
        summary = summarize(matrix, initial)
    return {"task_boundary_rounds": evaluation.boundaries, "accuracy_matrix": matrix.tolist(), **summary,
            "accuracy_per_round": {str(r): a for r, a in sorted(acc.items())}}


def client_matrix(evaluation: ServerEvaluation, client: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A client's accuracy matrix of the global model, in its own task order: R_c[k][k'] = accuracy on
    the client's k'-th task after the round where it finished its k-th task; and round 0's, same order."""
    order = evaluation.schedule.order(client)
    ends = client_task_ends(evaluation.schedule, client)
    acc = evaluation.accuracy
    matrix = np.array([[acc[e][t] for t in order] for e in ends])
    initial = np.array([acc[0][t] for t in order]) if 0 in acc and evaluation.benchmark.scenario != "class_incremental" else None
    return matrix, initial


def per_client_results(cfg: FedRunConfig, strategy: FedCLStrategy, evaluation: ServerEvaluation) -> dict[str, Any]:
    f, recorder, population = cfg.federation, strategy.recorder, strategy.population
    own = {population.node_to_client[n] for n in population.own_data if n in population.node_to_client}
    per_client = {
        "accuracy": {str(k): v for k, v in recorder.client_accuracy.get(cfg.num_rounds, {}).items()},
        "accuracy_per_round": {str(r): {str(k): v for k, v in accs.items()} for r, accs in sorted(recorder.client_accuracy.items())},
        # "client": measured by the node on its own test data; "server": from the server's per-task accuracies
        "accuracy_source": {str(c): "client" if c in own else "server" for c in sorted(set(population.node_to_client.values()))},
        "task_schedule": {str(c): {"order": evaluation.schedule.order(c), "starts": evaluation.schedule.starts(c)} for c in range(f.num_clients)},
    }
    if f.task_order == "per_client":
        per_client["accuracy_matrix"] = {str(c): client_matrix(evaluation, c)[0].tolist() for c in range(f.num_clients)}
    return {"per_client": per_client}


def communication_results(cfg: FedRunConfig, strategy: FedCLStrategy, evaluation: ServerEvaluation) -> dict[str, Any]:
    recorder = strategy.recorder
    per_round = recorder.ledger.per_round()
    for row in per_round:
        row.update(recorder.round_stats.get(row["round"], {}))
        row["full_model_bytes"] = recorder.full_model_bytes.get(row["round"], 0)
        row["accuracy_per_task"] = evaluation.accuracy.get(row["round"])
        row["per_client_task"] = {str(k): v for k, v in sorted(recorder.client_tasks.get(row["round"], {}).items())}
    up, down = recorder.ledger.total("up"), recorder.ledger.total("down")
    full_total = sum(recorder.full_model_bytes.values())
    per_client_task = max(cfg.federation.num_clients * cfg.data.num_tasks, 1)
    return {"bytes_up": up, "bytes_down": down, "bytes_total": up + down, "full_model_bytes_total": full_total,
            # the run's bytes spread over clients and tasks (MB per client per task = this / 1e6)
            "bytes_up_per_client_per_task": up / per_client_task, "bytes_per_client_per_task": (up + down) / per_client_task,
            # the final collect step of summed statistics (round R+1 in per_round), None without 'sum' state
            "collect_step": recorder.round_stats.get(cfg.num_rounds + 1),
            "full_model_bytes_per_round": [recorder.full_model_bytes.get(r, 0) for r in range(1, cfg.num_rounds + 1)],
            "fraction_of_full_model": (up + down) / full_total if full_total else None,
            "quantization": cfg.federation.quantization, "per_round": per_round}


def time_results(cfg: FedRunConfig, recorder) -> dict[str, Any]:
    stats = recorder.round_stats
    return {"simulated_round_time_s": [stats.get(r, {}).get("simulated_round_time_s", 0.0) for r in range(1, cfg.num_rounds + 1)],
            "simulated_total_time_s": round(sum(s.get("simulated_round_time_s", 0.0) for s in stats.values()), 3),
            "client_train_time_s": round(sum(s.get("client_train_time_s", 0.0) for s in stats.values()), 3)}


def privacy_results(cfg: FedRunConfig, recorder) -> dict[str, Any] | None:
    """Central DP's settings, noise and guarantee: epsilon at ``federation.dp_delta`` after each round."""
    f = cfg.federation
    if not f.dp_clipping_norm:
        return None
    sampled = [recorder.round_stats.get(r, {}).get("clients_sampled", 0) for r in range(1, cfg.num_rounds + 1)]
    return {"clipping_norm": f.dp_clipping_norm, "noise_multiplier": f.dp_noise_multiplier, "delta": f.dp_delta,
            "noise_std_per_round": [noise_std(f.dp_noise_multiplier, f.dp_clipping_norm, m) for m in sampled],
            "epsilon_per_round": epsilons(f.dp_noise_multiplier, sampled, f.num_clients, f.dp_delta),
            "accountant": "dp-accounting RDP, fixed-size sampling without replacement, replace-one adjacency (sensitivity 2C)"}


def headline(results: dict[str, Any], path: Path) -> dict[str, Any]:
    c = results["communication"]
    return {"results": str(path.resolve()), "final_avg_accuracy": round(results["final_avg_accuracy"], 4),
            "avg_forgetting": round(results["avg_forgetting"], 4), "rounds": results["rounds"], "num_clients": results["num_clients"],
            "bytes_up": c["bytes_up"], "bytes_down": c["bytes_down"], "rejected_updates": len(results["rejected_updates"])}


def build_server_app(cfg: FedRunConfig | None = None, out_dir: str | Path | None = None, simulation: bool = False) -> ServerApp:
    """A ServerApp bound to ``cfg``, or reading the run config when ``cfg`` is None (``flwr run``).
    ``simulation``: fedcl's own simulation, whose clients keep their state unflushed on this machine."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        resolved = resolve_config(cfg, context)
        out = Path(out_dir or context.run_config.get("out-dir") or "runs/federated")
        try:
            results, final_state = run_server(resolved, grid, out, sync_before_checkpoint=simulation)
        except FedclError as exc:  # left for whoever started the run (Flower's engines only log ServerApp errors)
            write_text_atomic(out / ERROR_FILE, json.dumps({"error": str(exc)}))
            raise
        save_state(final_state, staged(out / GLOBAL_MODEL_FILE))  # written in full before anything is replaced
        write_results(results, out, stage=True)
        path = promote_all(out, GLOBAL_MODEL_FILE, CHECKPOINT_FILE, RESULTS_FILE)  # results.json last
        (out / ERROR_FILE).unlink(missing_ok=True)
        # the ServerApp's log reaches whoever started the run (`flwr run --stream`, `flwr log <run-id>`)
        log(INFO, "fedcl results: %s", json.dumps(headline(results, path)))

    return app


app = build_server_app()
