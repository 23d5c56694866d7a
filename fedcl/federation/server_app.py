"""The fedcl ServerApp: runs the rounds, evaluates the global model after every round
on every task's test data, checkpoints, and writes ``results.json``."""

from __future__ import annotations

import json
import time
import uuid
from logging import INFO
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedcl.errors import FedclError
from fedcl.federation.accounting import message_bytes
from fedcl.federation.app_config import resolve_config
from fedcl.federation.checkpoint import CHECKPOINT_FILE, Checkpoint, CheckpointError, check_state, load_checkpoint, save_checkpoint
from fedcl.federation.codec import encode
from fedcl.federation.runtime import benchmark_for, build_learner, build_model, client_stream, load_state, schedule_for, seen_tasks
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.privacy import noise_std
from fedcl.federation.strategy import FedCLStrategy
from fedcl.metrics import peak_memory_mb, summarize
from fedcl.progress import round_done
from fedcl.runner import describe_run, write_results
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
    """The server's benchmark, model, method, learner (for evaluation) and initial global (exchanged) state."""
    benchmark = benchmark_for(cfg)
    model, method = build_model(cfg, benchmark)
    learner = build_learner(cfg, model, method, benchmark, cfg.seed)  # its method decides what is exchanged
    global_state = {k: v.detach().clone() for k, v in model.exchanged_state().items()}
    return benchmark, model, method, learner, global_state


def checked_checkpoint(cfg: FedRunConfig, path: Path, global_state: dict[str, torch.Tensor]) -> tuple[Checkpoint, dict[str, torch.Tensor]]:
    """The checkpoint at ``path``, checked against the config and the model (clear errors otherwise)."""
    ckpt = load_checkpoint(path, cfg.to_dict())
    checked = check_state(ckpt, "global", global_state, path)
    if "strategy" not in ckpt.state or "run_token" not in ckpt.state:
        raise CheckpointError(f"checkpoint {path} lacks the server state (strategy, run token)")
    return ckpt, checked


def preflight(cfg: FedRunConfig, out: Path) -> None:
    """Everything that can fail on the user's input, checked before any simulation starts: data, backbone
    and weights, and (when resuming) the checkpoint. Caches make the ServerApp's own build free."""
    *_, global_state = server_model(cfg)
    client_stream(cfg, 0)  # partitions the shared data for every client (cached for the run)
    if cfg.federation.resume:
        checked_checkpoint(cfg, out / CHECKPOINT_FILE, global_state)


def run_rounds(cfg: FedRunConfig, grid: Grid, strategy: FedCLStrategy, evaluate, first_round: int, run_token: str,
               checkpoint) -> None:
    """Rounds ``first_round``..R: discover new nodes, train, aggregate, evaluate, checkpoint."""
    f = cfg.federation
    for server_round in range(first_round, cfg.num_rounds + 1):
        log(INFO, "[ROUND %s/%s]", server_round, cfg.num_rounds)
        strategy.discover(grid, f.round_timeout_s)
        train_config = ConfigRecord({"local-epochs": f.local_epochs, "run-token": run_token})
        replies = grid.send_and_receive(strategy.configure_train(server_round, None, train_config, grid), timeout=f.round_timeout_s)
        strategy.aggregate_train(server_round, replies)
        evaluation = list(strategy.configure_evaluate(server_round, None, ConfigRecord(), grid))
        if evaluation:
            strategy.aggregate_evaluate(server_round, grid.send_and_receive(evaluation, timeout=f.round_timeout_s))
        round_done(server_round, cfg.num_rounds, evaluate(server_round))
        if f.checkpoint_every and (server_round % f.checkpoint_every == 0 or server_round == cfg.num_rounds):
            checkpoint(server_round)


def run_server(cfg: FedRunConfig, grid: Grid, out: Path | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Run the federation (resuming from ``out``'s checkpoint if asked); returns the results and the final global state."""
    start = time.perf_counter()
    f = cfg.federation
    benchmark, model, method, learner, global_state = server_model(cfg)
    schedule = schedule_for(cfg)
    full_state = {**{f"backbone.{k}": v for k, v in model.backbone.state_dict().items()},
                  **{f"head.{k}": v for k, v in model.head.state_dict().items()}}
    strategy = FedCLStrategy(cfg, global_state, model.aggregation_kinds(), message_bytes(encode(full_state, "none")),
                             backbone_crc=model.backbone.fingerprint() if model.backbone.frozen else None)
    wait_for_nodes(grid, f.min_available_nodes or f.num_clients, f.node_wait_s)

    per_round_acc: dict[int, list[float]] = {}

    boundaries = schedule.boundary_rounds(f.num_clients)

    def evaluate(server_round: int) -> list[float] | None:
        if not f.evaluate_every_round and server_round not in boundaries:
            return
        load_state(model, strategy.global_state)
        seen = sorted({t for c in range(f.num_clients) for t in (seen_tasks(cfg, c, server_round) if server_round else [])})
        model.seen_tasks = seen
        learner.seen_classes = {c for t in seen for c in benchmark.task_classes[t]}
        per_round_acc[server_round] = learner.evaluate(benchmark.test_stream)
        return per_round_acc[server_round]

    path = Path(out or "runs/federated") / CHECKPOINT_FILE
    first_round, run_token = 1, uuid.uuid4().hex
    if f.resume:
        ckpt, checked = checked_checkpoint(cfg, path, global_state)
        adam = {g: ckpt.group(g) for g in ("adam_m", "adam_v")}
        strategy.load_state_dict(ckpt.state["strategy"], checked, adam["adam_m"], adam["adam_v"])
        per_round_acc.update({int(r): a for r, a in ckpt.state["server_accuracy"].items()})
        first_round, run_token = ckpt.server_round + 1, ckpt.state["run_token"]
        log(INFO, "fedcl: resuming after round %s from %s", ckpt.server_round, path)
    else:
        path.unlink(missing_ok=True)
        evaluate(0)

    def checkpoint(server_round: int) -> None:
        state, tensors = strategy.state_dict()
        positions = {pid: schedule.position(pid, server_round) for pid in range(f.num_clients)}  # where each stream is
        save_checkpoint(path, Checkpoint(server_round, cfg.to_dict(), tensors,
                                         {"strategy": state, "server_accuracy": per_round_acc, "run_token": run_token,
                                          "stream_positions": positions}))

    run_rounds(cfg, grid, strategy, evaluate, first_round, run_token, checkpoint)
    if not any(stats.get("clients_trained") for stats in strategy.round_stats.values()):
        first = strategy.rejected[0] if strategy.rejected else "no client had data to train on"
        raise FedclError(f"no client update was accepted in any of the {cfg.num_rounds} rounds; the first problem: {first}")

    matrix = torch.tensor([per_round_acc[r] for r in boundaries]).numpy()
    per_round = strategy.ledger.per_round()
    for row in per_round:
        row.update(strategy.round_stats.get(row["round"], {}))
        row["full_model_bytes"] = strategy.full_model_bytes.get(row["round"], 0)
        row["accuracy_per_task"] = per_round_acc.get(row["round"])
        row["per_client_task"] = {str(k): v for k, v in sorted(strategy.client_tasks.get(row["round"], {}).items())}
    bytes_up, bytes_down = strategy.ledger.total("up"), strategy.ledger.total("down")
    full_total = sum(strategy.full_model_bytes.values())
    final_clients = strategy.client_accuracy.get(cfg.num_rounds, {})
    results = {
        **describe_run(cfg, benchmark, method, model, global_state.values()),
        "mode": "federated",
        "num_clients": f.num_clients,
        "rounds": cfg.num_rounds,
        "task_boundary_rounds": boundaries,
        "accuracy_matrix": matrix.tolist(),
        **summarize(matrix),
        "accuracy_per_round": {str(r): a for r, a in sorted(per_round_acc.items())},
        "per_client": {"accuracy": {str(k): v for k, v in final_clients.items()},
                       "accuracy_per_round": {str(r): {str(k): v for k, v in accs.items()} for r, accs in sorted(strategy.client_accuracy.items())},
                       "task_schedule": {str(c): {"order": schedule.order(c), "starts": schedule.starts(c)} for c in range(f.num_clients)}},
        "communication": {
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "bytes_total": bytes_up + bytes_down,
            "full_model_bytes_total": full_total,
            "full_model_bytes_per_round": [strategy.full_model_bytes.get(r, 0) for r in range(1, cfg.num_rounds + 1)],
            "fraction_of_full_model": (bytes_up + bytes_down) / full_total if full_total else None,
            "quantization": f.quantization,
            "per_round": per_round,
        },
        "simulated_round_time_s": [strategy.round_stats.get(r, {}).get("simulated_round_time_s", 0.0) for r in range(1, cfg.num_rounds + 1)],
        "simulated_total_time_s": round(sum(s.get("simulated_round_time_s", 0.0) for s in strategy.round_stats.values()), 3),
        "client_train_time_s": round(sum(s.get("client_train_time_s", 0.0) for s in strategy.round_stats.values()), 3),
        "rejected_updates": strategy.rejected,
        "privacy": {"clipping_norm": f.dp_clipping_norm, "noise_multiplier": f.dp_noise_multiplier,
                    "noise_std_per_round": [noise_std(f.dp_noise_multiplier, f.dp_clipping_norm, strategy.round_stats.get(r, {}).get("clients_sampled", 0))
                                            for r in range(1, cfg.num_rounds + 1)]} if f.dp_clipping_norm else None,
        "wall_time_s": round(time.perf_counter() - start, 2),
        **peak_memory_mb(),
    }
    return results, strategy.global_state


def headline(results: dict[str, Any], path: Path) -> dict[str, Any]:
    c = results["communication"]
    return {"results": str(path.resolve()), "final_avg_accuracy": round(results["final_avg_accuracy"], 4),
            "avg_forgetting": round(results["avg_forgetting"], 4), "rounds": results["rounds"], "num_clients": results["num_clients"],
            "bytes_up": c["bytes_up"], "bytes_down": c["bytes_down"], "rejected_updates": len(results["rejected_updates"])}


def build_server_app(cfg: FedRunConfig | None = None, out_dir: str | Path | None = None) -> ServerApp:
    """A ServerApp bound to ``cfg``, or reading the run config when ``cfg`` is None (``flwr run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        resolved = resolve_config(cfg, context)
        out = Path(out_dir or context.run_config.get("out-dir") or "runs/federated")
        try:
            results, final_state = run_server(resolved, grid, out)
        except FedclError as exc:  # left for whoever started the run (Flower's engines only log ServerApp errors)
            out.mkdir(parents=True, exist_ok=True)
            (out / ERROR_FILE).write_text(json.dumps({"error": str(exc)}))
            raise
        path = write_results(results, out)
        save_state(final_state, out / GLOBAL_MODEL_FILE)
        # the ServerApp's log reaches whoever started the run (`flwr run --stream`, `flwr log <run-id>`)
        log(INFO, "fedcl results: %s", json.dumps(headline(results, path)))

    return app


app = build_server_app()
