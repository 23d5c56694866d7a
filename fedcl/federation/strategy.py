"""The fedcl server strategy: composes the population, the round recorder, an aggregator, and the
optional FedAdam step or central DP, around the global state (only the lightweight, exchanged part).

It is not a subclass of Flower's ``Strategy``: fedcl runs its own round loop
(:func:`fedcl.federation.server_app.run_rounds`: node discovery, deadlines, quorum, checkpoints),
so ``Strategy.start`` would never run, and the global state lives here as tensors rather than
being passed in as an ``ArrayRecord``. Keeping Flower's four hook names with other signatures
would promise a drop-in strategy that this is not; the hooks below are named after what they do.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import WARNING

import torch
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid

from fedcl.federation.accounting import message_bytes
from fedcl.federation.aggregation import ClientUpdate, combine, total_change
from fedcl.federation.aggregators import check_aggregator, create_aggregator
from fedcl.federation.codec import encode
from fedcl.federation.factors import CONFIG_KEY as FACTOR_CONFIG_KEY
from fedcl.federation.population import Population
from fedcl.federation.privacy import private_mean, refuse_sums
from fedcl.federation.profiles import client_profile, simulated_client_time
from fedcl.federation.recorder import RoundRecorder
from fedcl.federation.replies import Refused, TrainReply, client_error, read_collect_reply, read_reply
from fedcl.federation.server_optimizer import ServerAdam
from fedcl.federation.settings import FedRunConfig


class FedCLStrategy:
    def __init__(self, cfg: FedRunConfig, global_state: dict[str, torch.Tensor], kinds: dict[str, str],
                 full_model_array_bytes: int, backbone_crc: int | None = None) -> None:
        f = cfg.federation
        check_aggregator(f.aggregation)
        if f.dp_clipping_norm is not None:
            refuse_sums(kinds)
        self.cfg, self.global_state, self.kinds, self.backbone_crc = cfg, global_state, kinds, backbone_crc
        self.aggregator = create_aggregator(f.aggregation, trim_fraction=f.trim_fraction, byzantine=f.krum_byzantine)
        self.server_opt = ServerAdam(lr=f.server_lr) if f.strategy == "fedadam" else None
        self.population = Population(cfg.seed, f.fraction_train)
        self.recorder = RoundRecorder(full_model_array_bytes)
        self.sum_keys = frozenset(k for k, kind in kinds.items() if kind == "sum")
        #: per client, the last round whose statistics ('sum' keys) were added to the global sums (told to the client)
        self.stats_accepted: dict[int, int] = {}
        self.checkpointed_round = 0  # the server's last checkpoint (clients keep the state a resume would load)
        self.collected = False  # the final collect step is done
        #: whether train messages carry the global sums. Clients that learn nothing by gradient (a statistical head
        #: on frozen features) never read them: they gather their own statistics and reply with the *changes*, so
        #: the sums stay on the server (``run_server`` turns this off for them; see :meth:`train_messages`)
        self.sums_down = True
        #: {packed-Gram key: D} that clients may send as a low-rank factor (``run_server`` sets it from the model,
        #: empty where :func:`fedcl.federation.factors.factors_allowed` says no); empty: packed only
        self.factor_dims: dict[str, int] = {}

    def discover(self, grid: Grid, timeout: float) -> None:
        self.population.discover(grid, timeout)

    # ------------------------------------------------------------------ train
    def train_messages(self, server_round: int, config: ConfigRecord, grid: Grid) -> list[Message]:
        """The global state (quantised if asked) for the clients sampled this round; without the summed statistics
        unless clients need them (``sums_down``): then each reply carries its statistics' changes."""
        state = self.global_state if self.sums_down else {k: v for k, v in self.global_state.items() if k not in self.sum_keys}
        payload = encode(state, self.cfg.federation.quantization)
        config["server-round"] = server_round
        config["sums-down"] = int(self.sums_down)
        messages = [Message(RecordDict({"arrays": payload, "config": self._client_config(config, node)}), node, MessageType.TRAIN)
                    for node in self.population.sample(server_round, grid)]
        self.recorder.sent_train(server_round, {m.metadata.dst_node_id: message_bytes(m) for m in messages}, message_bytes(payload))
        return messages

    def _client_config(self, config: ConfigRecord, node: int) -> ConfigRecord:
        """The round's config plus what this node's client needs to keep its statistics exact."""
        out = ConfigRecord(dict(config))
        if self.sum_keys:
            out["stats-accepted-round"] = self.stats_accepted.get(self.population.node_to_client[node], 0)
            out["checkpoint-round"] = self.checkpointed_round
            out[FACTOR_CONFIG_KEY] = int(bool(self.factor_dims))
        return out

    def _read(self, server_round: int, msg: Message) -> TrainReply | None:
        node = msg.metadata.src_node_id
        try:
            changes = frozenset() if self.sums_down else self.sum_keys
            reply = read_reply(msg, server_round, self.population.who(node), self.cfg, self.global_state, self.kinds, self.backbone_crc,
                               changes, self.factor_dims)
        except Refused as exc:
            self.recorder.reject(str(exc))
            reply = exc.reply
            if reply is not None:
                self._record(server_round, msg, reply)
            return None
        self._record(server_round, msg, reply)
        return reply

    def _record(self, server_round: int, msg: Message, reply: TrainReply) -> None:
        """Bytes and task of a reply that said who it is (refused or not)."""
        self.population.node_to_client[msg.metadata.src_node_id] = reply.pid
        up = message_bytes(msg)
        self.recorder.exchanged(server_round, reply.pid, msg.metadata.src_node_id, up)
        self.recorder.client_tasks.setdefault(server_round, {})[reply.pid] = reply.task
        if "arrays" in msg.content.array_records and int(msg.content.metric_records["metrics"]["num-examples"]) > 0:
            self.recorder.add_full(server_round, up - message_bytes(msg.content.array_records["arrays"]))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> MetricRecord:
        """Validate the replies (in partition order: the same sums whatever the arrival order) and update the global state."""
        replies = sorted(replies, key=lambda m: self.population.order_key(m.metadata.src_node_id))
        rejected_before = len(self.recorder.rejected)
        read = [r for r in (self._read(server_round, m) for m in replies) if r is not None]
        trained = [r for r in read if r.update is not None]
        f = self.cfg.federation
        quorum = len(trained) >= f.min_train_replies
        if quorum:
            self.global_state = self._combine(server_round, [r.update for r in trained])
            self.stats_accepted.update({r.pid: server_round for r in trained if self.sum_keys & {*r.update.state, *r.update.factors}})
        else:
            log(WARNING, "fedcl: round %s: %s valid update(s), fewer than federation.min_train_replies=%s; the global model is kept",
                server_round, len(trained), f.min_train_replies)
        failed = sum(m.has_error() for m in replies)
        stats = self._round_stats(server_round, read, trained, {m.metadata.src_node_id for m in replies}, quorum)
        stats.update(clients_failed=failed, clients_rejected=len(self.recorder.rejected) - rejected_before - failed)
        self.recorder.round_stats[server_round] = stats
        return MetricRecord({"num-examples": stats["num_examples"], "clients-trained": len(trained)})

    def _combine(self, server_round: int, updates: list[ClientUpdate]) -> dict[str, torch.Tensor]:
        f = self.cfg.federation
        combined = combine(self.global_state, updates, self.kinds, self.aggregator)
        if f.dp_clipping_norm is not None:
            sampled = len(self.recorder.sent.get(server_round, {}))
            noisy = private_mean(self.global_state, updates, self.kinds, sampled, f.dp_clipping_norm, f.dp_noise_multiplier,
                                 seed=f"{self.cfg.seed}-dp-{server_round}")
            return {**combined.state, **noisy}
        if self.server_opt is not None:
            return self.server_opt.step(self.global_state, combined.state, self.kinds, combined.touched)
        return combined.state

    def _round_stats(self, server_round: int, read: list[TrainReply], trained: list[TrainReply], replied: set[int], quorum: bool) -> dict:
        sent = self.recorder.sent.get(server_round, {})
        ledger = self.recorder.ledger
        sim_times = [simulated_client_time(client_profile(self.cfg.federation.device_profiles, r.pid, self.cfg.seed), r.train_time_s,
                                           ledger.down[server_round].get(r.pid, 0), ledger.up[server_round].get(r.pid, 0)) for r in trained]
        examples = sum(r.update.num_examples for r in trained)
        return {
            "round": server_round,
            "clients_sampled": len(sent),
            "clients_trained": len(trained),
            "clients_timed_out": len(set(sent) - replied),
            "clients_unavailable": sum(r.unavailable for r in read),
            "quorum": quorum,
            "num_examples": examples,
            "train_loss": sum(r.loss * r.update.num_examples for r in trained) / examples if examples else None,
            "client_train_time_s": round(sum(r.train_time_s for r in trained), 3),  # summed over the clients that trained
            "real_round_time_s": self.recorder.elapsed(server_round),
            "simulated_round_time_s": round(max(sim_times), 3) if sim_times else 0.0,
        }

    # ------------------------------------------------------------------ final collect step
    def collect_messages(self, server_round: int, config: ConfigRecord, grid: Grid, settled: frozenset[int] = frozenset()
                         ) -> list[Message]:
        """One message to every connected node but the ``settled`` clients (known to hold nothing the server
        lacks): send the statistics you have not sent (or not had confirmed). It carries the global state
        without its sums (a transform the client may need to encode with)."""
        payload = encode({k: v for k, v in self.global_state.items() if k not in self.sum_keys}, "none")
        config.update({"server-round": server_round, "collect": 1, "last-round": self.cfg.num_rounds})
        nodes = [n for n in self.population.connected(grid) if self.population.node_to_client[n] not in settled]
        messages = [Message(RecordDict({"arrays": payload, "config": self._client_config(config, node)}), node, MessageType.TRAIN)
                    for node in nodes]
        self.recorder.sent_train(server_round, {m.metadata.dst_node_id: message_bytes(m) for m in messages}, message_bytes(payload))
        self.recorder.full_model_bytes.pop(server_round, None)  # full-model FedAvg has no collect step
        return messages

    def aggregate_collect(self, server_round: int, replies: Iterable[Message]) -> dict:
        """Add the statistics of the valid collect replies (their 'sum' changes); returns the step's figures."""
        reference = {k: v for k, v in self.global_state.items() if k in self.sum_keys}
        changes, factors, contributed = [], [], []
        for msg in sorted(replies, key=lambda m: self.population.order_key(m.metadata.src_node_id)):
            try:
                pid, change, factor = read_collect_reply(msg, server_round, self.population.who(msg.metadata.src_node_id), reference,
                                                         self.factor_dims)
            except Refused as exc:
                self.recorder.reject(str(exc))
                continue
            self.recorder.exchanged(server_round, pid, msg.metadata.src_node_id, message_bytes(msg))
            if change or factor:
                changes.append(change)
                factors.append(factor)
                contributed.append(pid)
        for key, current in reference.items():
            total = total_change(current, (c[key] for c in changes if key in c), [f[key] for f in factors if key in f])
            self.global_state[key] = (current.double() + total).to(current.dtype)
        self.stats_accepted.update({pid: server_round for pid in contributed})
        self.collected = True
        return {"round": server_round, "step": "collect", "clients_unavailable": 0, "clients_asked": len(self.recorder.sent.get(server_round, {})),
                "clients_contributed": len(contributed), "clients_contributed_ids": contributed}

    # ------------------------------------------------------------------ client-side evaluation
    def evaluate_messages(self, server_round: int, grid: Grid) -> list[Message]:
        """The global model for the clients with their own test data (the others' local accuracy is
        computed on the server from its per-task accuracies: :func:`fedcl.federation.server_app.local_accuracies`)."""
        nodes = [n for n in self.population.connected(grid) if n in self.population.own_data]
        if not nodes:
            return []
        content = RecordDict({"arrays": encode(self.global_state, "none"), "config": ConfigRecord({"server-round": server_round})})
        return [Message(content, node, MessageType.EVALUATE) for node in nodes]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        accs = self.recorder.client_accuracy.setdefault(server_round, {})
        for msg in replies:
            if msg.has_error():
                self.recorder.reject(f"round {server_round} node {msg.metadata.src_node_id}: evaluation error: {client_error(msg.error.reason)}")
                continue
            m = msg.content.metric_records.get("metrics")
            if m is not None and "partition-id" in m:
                accs[int(m["partition-id"])] = float(m["accuracy"])
        self.recorder.client_accuracy[server_round] = dict(sorted(accs.items()))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-serialisable state, tensors) of everything a resumed run needs."""
        tensors = {f"global/{k}": v for k, v in self.global_state.items()}
        if self.server_opt is not None:
            tensors.update({f"adam_m/{k}": v for k, v in self.server_opt.m.items()})
            tensors.update({f"adam_v/{k}": v for k, v in self.server_opt.v.items()})
        return {**self.recorder.state_dict(), "adam_steps": self.server_opt.steps if self.server_opt else 0,
                "stats_accepted": self.stats_accepted, "collected": self.collected}, tensors

    def load_state_dict(self, state: dict, global_state: dict[str, torch.Tensor], adam_m: dict, adam_v: dict) -> None:
        self.global_state = global_state
        self.recorder.load_state_dict(state)
        self.stats_accepted = {int(k): int(v) for k, v in state.get("stats_accepted", {}).items()}
        self.collected = bool(state.get("collected", False))
        if self.server_opt is not None:
            self.server_opt.steps, self.server_opt.m, self.server_opt.v = int(state["adam_steps"]), adam_m, adam_v
