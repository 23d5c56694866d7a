"""fedcl's federated input tuning vs a plain Flower simulation that fine-tunes the whole backbone
(quickstart style: model rebuilt per call, all weights exchanged), same clients and data, on Ray.

    .venv/bin/python benchmarks/vs_plain_flower.py [--clients 5] [--rounds 3]

Prints seconds per round and bytes per round (down + up, all clients) for both, and the ratios
(targets: >= 10x faster, <= 2.5 % of the bytes). The first round (Ray workers start, fedcl's
worker caches fill) is shown apart; the ratio is taken over the rounds after it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fedcl.config import build_config  # noqa: E402
from fedcl.federation.settings import FedRunConfig  # noqa: E402
from fedcl.federation.simulation import backend_config, run_ray_simulation  # noqa: E402
from round_timing import first_and_steady  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    overrides = [f"federation.num_clients={args.clients}", "data.num_tasks=5", f"federation.rounds_per_task={args.rounds}",
                 f"data.max_train_per_class={args.per_class}", f"data.image_size={args.image_size}", "federation.boundary_jitter=0",
                 "federation.evaluate_clients=false", "federation.evaluate_every_round=false", 'federation.device_profiles=["server"]']
    cfg = build_config("federated_input_tuning", None, overrides, schema=FedRunConfig)
    logging.getLogger("flwr").setLevel(logging.WARNING)

    # fedcl: only the first task's rounds are compared (the plain app trains the same experiences)
    with tempfile.TemporaryDirectory() as out:
        r = run_ray_simulation(cfg, out, quiet=True)
    rows = r["communication"]["per_round"][: args.rounds]
    fedcl_first, fedcl_round_s = first_and_steady([row["real_round_time_s"] for row in rows])
    fedcl_bytes = sum(row["bytes_up"] + row["bytes_down"] for row in rows) / args.rounds

    from flwr.simulation import run_simulation
    from plain_flower import build_apps

    timings: dict = {}
    server, client = build_apps(cfg, args.rounds, timings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(server_app=server, client_app=client, num_supernodes=args.clients, backend_config=backend_config(cfg))
    plain_first, plain_round_s = first_and_steady(timings["round_seconds"])
    plain_bytes = 2 * args.clients * timings["bytes_per_message"]

    print(f"{args.clients} clients, {args.image_size} px, {args.per_class} images per class, EfficientNet-Lite0, Ray, 1 CPU per client")
    print(f"fedcl input tuning : first round {fedcl_first:6.2f} s, then {fedcl_round_s:6.2f} s/round  {fedcl_bytes / 1e6:9.3f} MB/round (task 1)")
    print(f"plain Flower full FT: first round {plain_first:6.2f} s, then {plain_round_s:6.2f} s/round  {plain_bytes / 1e6:9.3f} MB/round (arrays only)")
    print(f"speed-up {plain_round_s / fedcl_round_s:.1f}x, bytes {100 * fedcl_bytes / plain_bytes:.2f} % of the plain app's")


if __name__ == "__main__":
    main()
