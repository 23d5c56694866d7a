"""Simulation overhead and scaling.

    .venv/bin/python benchmarks/sim_overhead.py [--clients 2,10,50,100] [--rounds 4]

1. Per-round cost of Flower's Ray engine with trivial clients (a 1-float reply): the first round
   (Ray workers start) apart from the later ones, against fedcl's in-process ``inline`` backend.
2. fedcl's own wall time per round (after the first) vs clients, image size and local epochs, on
   Ray and inline, and the summed client training time as a share of it.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from round_timing import TimedFedAvg, first_and_steady

from fedcl.config import build_config
from fedcl.federation.inline import run_inline
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_federated


def trivial_apps(clients: int, rounds: int, timings: dict):
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        while len(list(grid.get_node_ids())) < clients:
            time.sleep(0.1)
        strategy = TimedFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=clients)
        strategy.start(grid, ArrayRecord({"w": Array(np.zeros(1, dtype=np.float32))}), num_rounds=rounds, train_config=ConfigRecord({}))
        timings["first_round_s"], timings["per_round_s"] = first_and_steady(strategy.round_seconds())

    return server, client


def trivial_round(clients: int, rounds: int, backend: str) -> tuple[float, float]:
    """(first round, later rounds) in seconds, with trivial clients."""
    from flwr.simulation import run_simulation

    timings: dict = {}
    server, client = trivial_apps(clients, rounds, timings)
    if backend == "inline":
        run_inline(server, client, clients)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            run_simulation(server_app=server, client_app=client, num_supernodes=clients,
                           backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                           "init_args": {"include_dashboard": False, "logging_level": "error", "log_to_driver": False}})
    return timings["first_round_s"], timings["per_round_s"]


def fedcl_round(overrides: list[str], backend: str) -> tuple[float, float]:
    """(wall seconds per round after the first, summed client training time / wall) of a small fedcl run."""
    cfg = build_config("fedsmoke", None, [f"federation.backend={backend}", "federation.evaluate_clients=false",
                                          "federation.evaluate_every_round=false", 'federation.device_profiles=["server"]',
                                          "federation.partition=iid", "data.max_train_per_class=100", *overrides], schema=FedRunConfig)
    with tempfile.TemporaryDirectory() as out:
        r = run_federated(cfg, out, quiet=True)
    rows = r["communication"]["per_round"][1:]  # the first round starts workers and fills caches
    wall = sum(row["real_round_time_s"] for row in rows) / len(rows)
    train = sum(row["client_train_time_s"] for row in rows) / len(rows)
    return wall, train / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="2,10,50,100")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    print("1. trivial clients (1-float reply): seconds per round (first round, then the mean of the later ones)")
    print(f"{'clients':>8s} {'Ray 1st':>8s} {'Ray':>8s} {'inline':>8s}")
    for n in [int(c) for c in args.clients.split(",")]:
        first, steady = trivial_round(n, args.rounds, "ray")
        print(f"{n:8d} {first:8.3f} {steady:8.3f} {trivial_round(n, args.rounds, 'inline')[1]:8.3f}", flush=True)
    print("\n2. fedcl input tuning: seconds per round after the first, and summed client training time / wall time")
    for label, overrides in [
        ("3 clients, 32 px, 1 epoch", []),
        ("6 clients, 32 px, 1 epoch", ["federation.num_clients=6"]),
        ("12 clients, 32 px, 1 epoch", ["federation.num_clients=12"]),
        ("3 clients, 64 px, 1 epoch", ["data.image_size=64"]),
        ("3 clients, 32 px, 3 epochs", ["federation.local_epochs=3"]),
    ]:
        cells = []
        for backend in ("ray", "inline"):
            wall, share = fedcl_round(overrides, backend)
            cells.append(f"{backend} {wall:6.2f} s/round, training {100 * share:5.1f} %")
        print(f"  {label:28s} " + " | ".join(cells), flush=True)

if __name__ == "__main__":
    main()
