"""Time to accuracy: fedcl's class-incremental configuration vs the plain Flower full fine-tuning app
(``benchmarks/plain_flower.py``) on the same stream, on Ray.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/time_to_accuracy.py [--preset federated_input_tuning] [--config FILE]
        [--set key=value ...] [--json runs/time_to_accuracy.json]

Default stream: the ``federated`` preset (10 clients, Split-Fashion-MNIST 5x2, class-incremental, 32 px).
``--preset``/``--config``/``--set`` choose fedcl's configuration (for example the statistical-head
default); the plain app reads the same data, clients, rounds and task schedule from it. Both are scored
after every round on the same global test data, the way fedcl's server does it: every task's test data,
logits restricted to the classes any client has seen (``accuracy`` = mean over the tasks = accuracy on
the whole test set, as classes have equally many test images).

Time axis: wall-clock seconds since the simulation was started (Ray start-up included), minus the time
spent evaluating (a measurement, not training); raw timestamps are kept in the JSON too.
Reported: each one's final accuracy and the time each needs to first reach the plain app's final accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fedcl.config import build_config
from fedcl.federation.settings import FedRunConfig

FORCED = ["federation.backend=ray", "federation.evaluate_clients=false", "federation.evaluate_every_round=true"]


class Clock:
    """Accuracy after every round, stamped with wall time and with the time spent evaluating so far."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.eval_s = 0.0
        self.points: list[dict] = []

    def record(self, server_round: int, accuracies: list[float], eval_started: float) -> None:
        now = time.perf_counter()
        self.eval_s += now - eval_started
        self.points.append({"round": server_round, "accuracy": sum(accuracies) / len(accuracies), "accuracy_per_task": accuracies,
                            "wall_s": round(now - self.start, 3), "train_wall_s": round(now - self.start - self.eval_s, 3)})


def run_fedcl(cfg: FedRunConfig) -> dict:
    """fedcl on Ray; the server's evaluations are timed by wrapping ``Learner.evaluate`` in this (the driver) process."""
    from fedcl.federation.simulation import run_ray_simulation
    from fedcl.learner import Learner

    clock = Clock()
    original = Learner.evaluate

    def timed(self, stream):
        began = time.perf_counter()
        accuracies = original(self, stream)
        clock.record(len(clock.points), accuracies, began)
        return accuracies

    Learner.evaluate = timed
    try:
        with tempfile.TemporaryDirectory() as out:
            results = run_ray_simulation(cfg, out, quiet=True)
    finally:
        Learner.evaluate = original
    return {"points": clock.points, "final_avg_accuracy_results_json": results["final_avg_accuracy"], "total_wall_s": round(time.perf_counter() - clock.start, 2)}


def run_plain(cfg: FedRunConfig) -> dict:
    from flwr.simulation import run_simulation
    from plain_flower import build_apps

    from fedcl.federation.simulation import backend_config

    clock = Clock()
    began = {"t": clock.start}

    def on_round(server_round: int, accuracies: list[float]) -> None:
        clock.record(server_round, accuracies, began["t"])

    timings: dict = {}
    server, client = build_apps(cfg, cfg.num_rounds, timings, on_round=on_round)
    # evaluate_fn starts right after aggregation: mark when each evaluation begins
    import plain_flower

    original = plain_flower.evaluate_global

    def timed(*args, **kwargs):
        began["t"] = time.perf_counter()
        return original(*args, **kwargs)

    plain_flower.evaluate_global = timed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            run_simulation(server_app=server, client_app=client, num_supernodes=cfg.federation.num_clients, backend_config=backend_config(cfg))
    finally:
        plain_flower.evaluate_global = original
    return {"points": clock.points, "total_wall_s": round(time.perf_counter() - clock.start, 2)}


def time_to(points: list[dict], target: float) -> float | None:
    """Training wall time at the first round whose accuracy reaches ``target`` (None: never)."""
    return next((p["train_wall_s"] for p in points if p["round"] > 0 and p["accuracy"] >= target - 1e-9), None)


def summarise(fedcl: dict, plain: dict) -> dict:
    target = plain["points"][-1]["accuracy"]
    t_fedcl, t_plain = time_to(fedcl["points"], target), time_to(plain["points"], target)
    return {"target_accuracy": target, "fedcl_final_accuracy": fedcl["points"][-1]["accuracy"], "plain_final_accuracy": target,
            "fedcl_time_to_target_s": t_fedcl, "plain_time_to_target_s": t_plain,
            "speedup": (t_plain / t_fedcl) if t_fedcl and t_plain else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="federated_input_tuning")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default="runs/time_to_accuracy.json")
    args = parser.parse_args()
    cfg = build_config(args.preset, args.config, [*args.overrides, *FORCED], schema=FedRunConfig)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": sys.argv, "config": cfg.to_dict()}
    fedcl = report["fedcl"] = run_fedcl(cfg)
    path.write_text(json.dumps(report, indent=1))  # kept if the plain app fails
    plain = report["plain"] = run_plain(cfg)
    summary = report["summary"] = summarise(fedcl, plain)
    path.write_text(json.dumps(report, indent=1))
    f = cfg.federation
    print(f"{f.num_clients} clients, {cfg.num_rounds} rounds, {cfg.data.image_size} px, {args.preset} {' '.join(args.overrides)}")
    for name, run in (("fedcl", fedcl), ("plain Flower full FT", plain)):
        print(f"{name:22s} " + " ".join(f"{p['round']}:{p['accuracy']:.3f}@{p['train_wall_s']:.0f}s" for p in run["points"]))
    print(f"final accuracy: fedcl {summary['fedcl_final_accuracy']:.4f}, plain {summary['plain_final_accuracy']:.4f}")
    print(f"time to the plain app's final accuracy ({summary['target_accuracy']:.4f}): fedcl {summary['fedcl_time_to_target_s']} s, "
          f"plain {summary['plain_time_to_target_s']} s, ratio {summary['speedup']}")


if __name__ == "__main__":
    main()
