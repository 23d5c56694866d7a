"""The fedcl server strategy: Flower's FedAvg, exchanging only the lightweight state.

It keeps the global state as tensors, sends it (optionally quantised), validates and
aggregates replies class-aware (:mod:`fedcl.federation.aggregation`), optionally
applies a FedAdam-style server step, and counts the exact bytes of every message.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedcl.federation.accounting import ByteLedger, message_bytes
from fedcl.federation.aggregation import ClientUpdate, ServerAdam, aggregate, robust_aggregate, update_norm
from fedcl.federation.codec import BadUpdateError, decode, encode
from fedcl.federation.profiles import client_profile, simulated_client_time
from fedcl.federation.settings import FedRunConfig


class FedCLStrategy(FedAvg):
    def __init__(
        self, cfg: FedRunConfig, global_state: dict[str, torch.Tensor], kinds: dict[str, str], full_model_array_bytes: int, backbone_crc: int | None = None
    ) -> None:
        f = cfg.federation
        # The server waits for the configured minimum once, with a deadline (server_app.wait_for_nodes);
        # Flower's own wait has none, so later rounds sample whoever is connected instead of hanging.
        super().__init__(
            fraction_train=f.fraction_train,
            fraction_evaluate=1.0 if f.evaluate_clients else 0.0,
            min_train_nodes=1,
            min_evaluate_nodes=1,
            min_available_nodes=1,
        )
        self.cfg = cfg
        self.global_state = global_state
        self.kinds = kinds
        self.server_opt = ServerAdam(lr=f.server_lr) if f.strategy == "fedadam" else None
        self.ledger = ByteLedger()
        self.full_model_array_bytes = full_model_array_bytes
        self.full_model_bytes: dict[int, int] = {}
        self.node_to_client: dict[int, int] = {}
        self.rejected: list[str] = []
        self.backbone_crc = backbone_crc
        self.client_tasks: dict[int, dict[int, int]] = {}
        self.round_stats: dict[int, dict] = {}
        self.client_accuracy: dict[int, dict[int, float]] = {}
        self._down: dict[int, dict[int, int]] = {}
        self._sent_at: dict[int, float] = {}

    def _reject(self, reason: str) -> None:
        """Record (in results.json) and log a reply that is left out of aggregation."""
        self.rejected.append(reason)
        log(WARNING, "fedcl: rejected: %s", reason)

    # ------------------------------------------------------------------ train
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        payload = encode(self.global_state, self.cfg.federation.quantization)
        messages = list(super().configure_train(server_round, payload, config, grid))
        array_bytes = message_bytes(payload)
        self._down[server_round] = {}
        for m in messages:
            size = message_bytes(m)
            self._down[server_round][m.metadata.dst_node_id] = size
            self._add_full(server_round, size - array_bytes)
        self._sent_at[server_round] = time.perf_counter()
        return messages

    def _add_full(self, server_round: int, overhead: int) -> None:
        self.full_model_bytes[server_round] = self.full_model_bytes.get(server_round, 0) + overhead + self.full_model_array_bytes

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        updates: list[ClientUpdate] = []
        sim_times, losses, trained, compute_s, failed = [], [], 0, 0.0, 0
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self._reject(f"round {server_round} node {node}: client error: {msg.error.reason.splitlines()[0]}")
                failed += 1
                continue
            metrics = msg.content.metric_records.get("metrics")
            if metrics is None or "partition-id" not in metrics:
                self._reject(f"round {server_round} node {node}: reply without 'metrics'")
                continue
            pid = int(metrics["partition-id"])
            self.node_to_client[node] = pid
            up = message_bytes(msg)
            down = self._down.get(server_round, {}).get(node, 0)
            self.ledger.record("up", server_round, pid, up)
            self.ledger.record("down", server_round, pid, down)
            self.client_tasks.setdefault(server_round, {})[pid] = int(metrics["task"])
            if int(metrics["num-examples"]) == 0:
                continue  # unavailable this round, or no data for its current task
            if self.backbone_crc is not None and int(metrics.get("backbone-crc", -1)) != self.backbone_crc:
                self._reject(f"client {pid} (round {server_round}): its backbone differs from the server's (fingerprint mismatch)")
                continue
            if "arrays" in msg.content.array_records:
                self._add_full(server_round, up - message_bytes(msg.content.array_records["arrays"]))
            try:
                state = decode(msg.content.array_records["arrays"], self.global_state, source=f"client {pid} (round {server_round})")
            except (BadUpdateError, KeyError) as exc:
                self._reject(str(exc) if isinstance(exc, BadUpdateError) else f"client {pid} (round {server_round}): no 'arrays'")
                continue
            bound = self.cfg.federation.max_update_norm
            if bound is not None and (norm := update_norm(state, self.global_state, self.kinds)) > bound:
                self._reject(f"client {pid} (round {server_round}): update norm {norm:.3g} exceeds federation.max_update_norm={bound:g}")
                continue
            updates.append(ClientUpdate(state, int(metrics["num-examples"]), list(metrics["class-counts"]), list(metrics["task-examples"])))
            profile = client_profile(self.cfg.federation.device_profiles, pid, self.cfg.seed)
            sim_times.append(simulated_client_time(profile, float(metrics["train-time-s"]), down, up))
            losses.append(float(metrics["loss"]) * int(metrics["num-examples"]))
            compute_s += float(metrics["train-time-s"])
            trained += int(metrics["num-examples"])
        f = self.cfg.federation
        if f.aggregation == "weighted":
            averaged = aggregate(self.global_state, updates, self.kinds)
        else:
            averaged = robust_aggregate(self.global_state, updates, self.kinds, f.aggregation, f.trim_fraction, f.krum_byzantine)
        if self.server_opt is not None and updates:
            averaged = self.server_opt.step(self.global_state, averaged, self.kinds)
        self.global_state = averaged
        self.round_stats[server_round] = {
            "round": server_round,
            "clients_trained": len(updates),
            "clients_failed": failed,
            "num_examples": trained,
            "train_loss": sum(losses) / trained if trained else None,
            "client_train_time_s": round(compute_s, 3),  # summed over the clients that trained
            "real_round_time_s": round(time.perf_counter() - self._sent_at.get(server_round, time.perf_counter()), 3),
            "simulated_round_time_s": round(max(sim_times), 3) if sim_times else 0.0,
        }
        metrics = MetricRecord({"num-examples": trained, "clients-trained": len(updates)})
        return encode(self.global_state, "none"), metrics

    # ------------------------------------------------------------------ client-side evaluation
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        every = self.cfg.federation.client_eval_every
        if server_round != self.cfg.num_rounds and not (every and server_round % every == 0):
            return []  # per-client (local) accuracy of the final global model, and every k rounds if asked
        return super().configure_evaluate(server_round, encode(self.global_state, "none"), config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        accs = {}
        for msg in replies:
            if msg.has_error():
                self._reject(f"round {server_round} node {msg.metadata.src_node_id}: evaluation error: {msg.error.reason}")
                continue
            m = msg.content.metric_records.get("metrics")
            if m is not None and "partition-id" in m:
                accs[int(m["partition-id"])] = float(m["accuracy"])
        self.client_accuracy[server_round] = dict(sorted(accs.items()))
        return MetricRecord({"mean-client-accuracy": sum(accs.values()) / len(accs)}) if accs else None
