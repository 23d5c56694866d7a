"""The fedcl server strategy: Flower's FedAvg, exchanging only the lightweight state.

It keeps the global state as tensors, samples clients by partition id from the seed,
sends the state (optionally quantised), validates and aggregates replies class-aware
and in partition order (:mod:`fedcl.federation.aggregation`), optionally clips and
noises them (central DP) or applies a FedAdam-style server step, and counts the exact
bytes of every message. Its whole state can be saved and restored (checkpoints).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from logging import WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedcl.federation.accounting import ByteLedger, message_bytes
from fedcl.federation.aggregation import ClientUpdate, ServerAdam, aggregate, clip_update, robust_aggregate, update_norm
from fedcl.federation.codec import BadUpdateError, decode, encode
from fedcl.federation.privacy import add_noise, noise_std
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
            fraction_evaluate=1.0,  # who evaluates is decided in configure_evaluate (federation.evaluate_clients)
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

    def _who(self, node: int) -> str:
        pid = self.node_to_client.get(node)
        return f"client {pid}" if pid is not None else f"node {node}"

    # ------------------------------------------------------------------ population
    def discover(self, grid: Grid, timeout: float) -> None:
        """Ask nodes the server has not met yet for their partition id (one small query message each)."""
        new = sorted(set(grid.get_node_ids()) - set(self.node_to_client))
        if not new:
            return
        queries = [Message(RecordDict({"config": ConfigRecord({"fedcl": "partition-id"})}), node, MessageType.QUERY) for node in new]
        for reply in grid.send_and_receive(queries, timeout=timeout):
            metrics = None if reply.has_error() else reply.content.metric_records.get("metrics")
            if metrics is None or "partition-id" not in metrics:
                reason = reply.error.reason.splitlines()[0] if reply.has_error() else "no partition-id"
                log(WARNING, "fedcl: node %s did not say its partition id (%s); asking again next round", reply.metadata.src_node_id, reason)
                continue
            self.node_to_client[reply.metadata.src_node_id] = int(metrics["partition-id"])

    def population(self, grid: Grid) -> list[int]:
        """Connected nodes with a known partition id, in partition order."""
        connected = set(grid.get_node_ids())
        return sorted((n for n in self.node_to_client if n in connected), key=lambda n: (self.node_to_client[n], n))

    def sample(self, server_round: int, grid: Grid) -> list[int]:
        """``fraction_train`` of the population, drawn from (seed, round): the same clients whatever the node ids."""
        nodes = self.population(grid)
        k = max(1, int(len(nodes) * self.cfg.federation.fraction_train)) if nodes else 0
        chosen = random.Random(f"{self.cfg.seed}-sample-{server_round}").sample(range(len(nodes)), k)
        return [nodes[i] for i in sorted(chosen)]

    # ------------------------------------------------------------------ train
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        payload = encode(self.global_state, self.cfg.federation.quantization)
        config["server-round"] = server_round
        messages = list(self._construct_messages(RecordDict({"arrays": payload, "config": config}), self.sample(server_round, grid), MessageType.TRAIN))
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
        sim_times, losses, trained, compute_s, failed, unavailable = [], [], 0, 0.0, 0, 0
        rejected_before = len(self.rejected)
        # partition order, not arrival order: the same sums (bit for bit) whatever the scheduling
        replies = sorted(replies, key=lambda m: (self.node_to_client.get(m.metadata.src_node_id, 1 << 62), m.metadata.src_node_id))
        sent = self._down.get(server_round, {})
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self._reject(f"round {server_round} {self._who(node)}: client error: {msg.error.reason.splitlines()[0]}")
                failed += 1
                continue
            metrics = msg.content.metric_records.get("metrics")
            if metrics is None or "partition-id" not in metrics:
                self._reject(f"round {server_round} {self._who(node)}: reply without 'metrics'")
                continue
            pid = int(metrics["partition-id"])
            self.node_to_client[node] = pid
            up = message_bytes(msg)
            down = sent.get(node, 0)
            self.ledger.record("up", server_round, pid, up)
            self.ledger.record("down", server_round, pid, down)
            self.client_tasks.setdefault(server_round, {})[pid] = int(metrics["task"])
            if int(metrics["num-examples"]) == 0:
                unavailable += int(metrics.get("unavailable", 0))
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
        replied = {m.metadata.src_node_id for m in replies}
        quorum = len(updates) >= f.min_train_replies
        if not quorum:
            log(WARNING, "fedcl: round %s: %s valid update(s), fewer than federation.min_train_replies=%s; the global model is kept",
                server_round, len(updates), f.min_train_replies)
        elif f.dp_clipping_norm is not None:
            self.global_state = self._private_average(server_round, updates, len(sent))
        else:
            if f.aggregation == "weighted":
                averaged = aggregate(self.global_state, updates, self.kinds)
            else:
                averaged = robust_aggregate(self.global_state, updates, self.kinds, f.aggregation, f.trim_fraction, f.krum_byzantine)
            if self.server_opt is not None and updates:
                averaged = self.server_opt.step(self.global_state, averaged, self.kinds)
            self.global_state = averaged
        self.round_stats[server_round] = {
            "round": server_round,
            "clients_sampled": len(sent),
            "clients_trained": len(updates),
            "clients_failed": failed,
            "clients_rejected": len(self.rejected) - rejected_before - failed,  # replies refused by validation
            "clients_timed_out": len(set(sent) - replied),
            "clients_unavailable": unavailable,
            "quorum": quorum,
            "num_examples": trained,
            "train_loss": sum(losses) / trained if trained else None,
            "client_train_time_s": round(compute_s, 3),  # summed over the clients that trained
            "real_round_time_s": round(time.perf_counter() - self._sent_at.get(server_round, time.perf_counter()), 3),
            "simulated_round_time_s": round(max(sim_times), 3) if sim_times else 0.0,
        }
        metrics = MetricRecord({"num-examples": trained, "clients-trained": len(updates)})
        return encode(self.global_state, "none"), metrics

    def _private_average(self, server_round: int, updates: list[ClientUpdate], sampled: int) -> dict[str, torch.Tensor]:
        """Central DP with server-side fixed clipping (as Flower's DifferentialPrivacyServerSideFixedClipping):
        each update clipped to ``dp_clipping_norm``, averaged with equal weights, plus Gaussian noise."""
        f = self.cfg.federation
        clipped = [ClientUpdate(clip_update(u.state, self.global_state, self.kinds, f.dp_clipping_norm), 1,
                                [1] * len(u.class_counts), [1] * len(u.task_examples)) for u in updates]
        averaged = aggregate(self.global_state, clipped, self.kinds)
        std = noise_std(f.dp_noise_multiplier, f.dp_clipping_norm, sampled)
        return add_noise(averaged, self.kinds, std, seed=f"{self.cfg.seed}-dp-{server_round}")

    # ------------------------------------------------------------------ client-side evaluation
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        every = self.cfg.federation.client_eval_every
        if not self.cfg.federation.evaluate_clients or (server_round != self.cfg.num_rounds and not (every and server_round % every == 0)):
            return []  # per-client (local) accuracy of the final global model, and every k rounds if asked
        config["server-round"] = server_round
        record = RecordDict({"arrays": encode(self.global_state, "none"), "config": config})
        return self._construct_messages(record, self.population(grid), MessageType.EVALUATE)

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

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-serialisable state, tensors) of everything a resumed run needs."""
        tensors = {f"global/{k}": v for k, v in self.global_state.items()}
        if self.server_opt is not None:
            tensors.update({f"adam_m/{k}": v for k, v in self.server_opt.m.items()})
            tensors.update({f"adam_v/{k}": v for k, v in self.server_opt.v.items()})
        state = {
            "ledger": {"down": self.ledger.down, "up": self.ledger.up},
            "full_model_bytes": self.full_model_bytes,
            "rejected": self.rejected,
            "client_tasks": self.client_tasks,
            "round_stats": self.round_stats,
            "client_accuracy": self.client_accuracy,
            "adam_steps": self.server_opt.steps if self.server_opt else 0,
        }
        return state, tensors

    def load_state_dict(self, state: dict, global_state: dict[str, torch.Tensor], adam_m: dict, adam_v: dict) -> None:
        def ints(d: dict) -> dict:
            return {int(k): ints(v) if isinstance(v, dict) and all(str(x).lstrip("-").isdigit() for x in v) else v for k, v in d.items()}

        self.global_state = global_state
        for direction in ("down", "up"):
            book = getattr(self.ledger, direction)
            book.clear()
            book.update(ints(state["ledger"][direction]))
        self.full_model_bytes = ints(state["full_model_bytes"])
        self.rejected = list(state["rejected"])
        self.client_tasks = ints(state["client_tasks"])
        self.round_stats = {int(k): v for k, v in state["round_stats"].items()}
        self.client_accuracy = ints(state["client_accuracy"])
        if self.server_opt is not None:
            self.server_opt.steps, self.server_opt.m, self.server_opt.v = int(state["adam_steps"]), adam_m, adam_v
