"""What a user would write otherwise: a plain Flower app (the quickstart way) that fine-tunes the whole
EfficientNet-Lite0 on each client, rebuilding the model in every call and exchanging all weights.

Used by ``benchmarks/vs_plain_flower.py`` and ``benchmarks/time_to_accuracy.py``; clients use fedcl's
partitions and task schedule, so both see the same data. ``evaluate_global`` scores the global model the
way fedcl's server does (class-incremental: the global test data of every task, logits restricted to
the classes any client has seen).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from round_timing import TimedFedAvg

from fedcl.data.preprocessing import to_model_input
from fedcl.federation.accounting import message_bytes


class Net(torch.nn.Module):
    """Backbone + linear head, built from scratch (weights loaded from disk) on every call."""

    def __init__(self, num_classes: int, image_size: int) -> None:
        super().__init__()
        from fedcl.backbones import create_backbone

        backbone = create_backbone("efficientnet_lite0")
        self.features = backbone.model
        self.register_buffer("mean", backbone.mean)
        self.register_buffer("std", backbone.std)
        for p in self.features.parameters():
            p.requires_grad_(True)
        self.fc = torch.nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, x):
        return self.fc(self.features((x - self.mean) / self.std))


@torch.inference_mode()
def evaluate_global(cfg, model: Net, server_round: int, batch_size: int = 256) -> list[float]:
    """Per-task accuracy of ``model`` on the global test stream, over the classes seen by any client so far."""
    from fedcl.builder import benchmark_for, seen_tasks

    benchmark = benchmark_for(cfg)
    seen = {t for c in range(cfg.federation.num_clients) for t in (seen_tasks(cfg, c, server_round) if server_round else [])}
    classes = sorted({k for t in seen for k in benchmark.task_classes[t]})
    model.eval()
    accuracies = []
    for experience in benchmark.test_stream:
        mask = torch.zeros(benchmark.num_classes, dtype=torch.bool)
        mask[classes or experience.classes] = True
        correct = 0
        for start in range(0, len(experience), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(experience)))
            logits = model(to_model_input(experience.data.images[idx], cfg.data.image_size, "cpu"))
            correct += int((logits.masked_fill(~mask, float("-inf")).argmax(1) == experience.data.labels[idx]).sum())
        accuracies.append(correct / max(len(experience), 1))
    return accuracies


def build_apps(cfg, rounds: int, timings: dict, on_round: Callable[[int, list[float]], None] | None = None):
    """The plain ServerApp and ClientApp; ``on_round(round, per-task accuracy)`` is called after every
    round (and for round 0) when given, with the global model evaluated by :func:`evaluate_global`."""
    from fedcl.builder import benchmark_for, client_stream, schedule_for

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(max(1, int(cfg.federation.client_num_cpus)))
        pid = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        experience = client_stream(cfg, pid)[schedule_for(cfg).task(pid, server_round)]
        model = Net(benchmark_for(cfg).num_classes, cfg.data.image_size)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.backbone_lr)
        for _ in range(cfg.federation.local_epochs):
            order = torch.randperm(len(experience))
            for start in range(0, len(experience), cfg.train.batch_size):
                idx = order[start : start + cfg.train.batch_size]
                if len(idx) < 2:
                    continue  # BatchNorm cannot train on a single sample
                x = to_model_input(experience.data.images[idx], cfg.data.image_size, "cpu")
                loss = F.cross_entropy(model(x), experience.data.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": max(1, len(experience))})}),
                       reply_to=msg)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        net = Net(benchmark_for(cfg).num_classes, cfg.data.image_size)
        initial = ArrayRecord(net.state_dict())
        timings["bytes_per_message"] = message_bytes(initial)
        strategy = TimedFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=cfg.federation.num_clients)

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if on_round is None:
                return None
            net.load_state_dict(arrays.to_torch_state_dict())
            accuracies = evaluate_global(cfg, net, server_round)
            on_round(server_round, accuracies)
            return MetricRecord({"accuracy": sum(accuracies) / len(accuracies)})

        strategy.start(grid, initial, num_rounds=rounds, train_config=ConfigRecord({}), evaluate_fn=evaluate_fn)
        timings["round_seconds"] = strategy.round_seconds()

    return server, client
