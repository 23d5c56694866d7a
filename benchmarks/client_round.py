"""Time of one client training round (the ClientApp's train handler, in-process, no Flower/Ray).

    .venv/bin/python benchmarks/client_round.py [--config simulations/fmnist_10clients.toml] [--profile]

Prints seconds per client-round for the config's clients (round 2, after warm-up).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedcl.builder import benchmark_for, build_model
from fedcl.config import build_config
from fedcl.federation.client_handlers import handle_train
from fedcl.federation.codec import encode
from fedcl.federation.flower_adapter import task_identity
from fedcl.federation.settings import FedRunConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="simulations/fmnist_10clients.toml")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    cfg = build_config(None, args.config, [], schema=FedRunConfig)
    model, _ = build_model(cfg, benchmark_for(cfg))
    payload = encode(model.exchanged_state())

    def client_round(pid: int, server_round: int) -> None:
        msg = Message(content=RecordDict({"arrays": payload, "config": ConfigRecord({"server-round": server_round})}),
                      dst_node_id=1, message_type="train")
        ctx = Context(run_id=1, node_id=1, node_config={"partition-id": pid, "num-partitions": cfg.federation.num_clients},
                      state=RecordDict(), run_config={})
        handle_train(cfg, msg, ctx)

    client_round(0, 1)  # warm-up: data, partitions, backbone
    profiler = cProfile.Profile() if args.profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    for pid in range(cfg.federation.num_clients):
        client_round(pid, 2)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - start
    print(f"{cfg.federation.num_clients} client-rounds: {elapsed:.2f} s, {elapsed / cfg.federation.num_clients:.3f} s per client-round")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)


if __name__ == "__main__":
    with task_identity(1, 0, 1):  # Flower stamps messages with these
        main()
