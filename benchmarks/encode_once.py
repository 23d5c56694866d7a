"""Frozen transforms are encoded once: how many images pass through the backbone in a federated run.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/encode_once.py [--preset federated] [--set key=value ...]

Runs the configuration inline and counts every image that enters the frozen backbone, split into the
clients' training (train handler), the inline prefetch of clients' samples (statistical heads: every client's
samples in large batches before clients train), the clients' own evaluation (evaluate handler) and the server.
With a frozen transform (statistical heads, head-only) each sample should be encoded once per task, whatever
the rounds per task, local epochs and training epochs: the "training encodes / samples" ratio (prefetch included)
is 1.0.
Prints the counts and the ratio; the run's own results go to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter

from fedcl import builder
from fedcl.backbones.base import FrozenBackbone
from fedcl.builder import client_stream
from fedcl.config import build_config
from fedcl.federation import client_handlers
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_federated

COUNTS: Counter = Counter()
ROLE = ["server"]


def counting_forward(original):
    def forward(self, images):
        COUNTS[ROLE[0]] += int(images.shape[0])
        return original(self, images)
    return forward


def in_role(role: str, handler):
    def wrapped(*args, **kwargs):
        ROLE[0] = role
        try:
            return handler(*args, **kwargs)
        finally:
            ROLE[0] = "server"
    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="federated")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = build_config(args.preset, None, ["federation.backend=inline", *args.overrides], schema=FedRunConfig)
    FrozenBackbone.forward = counting_forward(FrozenBackbone.forward)
    client_handlers.handle_train = in_role("client training", client_handlers.handle_train)
    client_handlers.handle_evaluate = in_role("client evaluation", client_handlers.handle_evaluate)
    builder.prefetch_client_features = in_role("prefetch", builder.prefetch_client_features)
    with tempfile.TemporaryDirectory() as out:
        results = run_federated(cfg, out, quiet=True)
    f = cfg.federation
    samples = sum(len(e) for c in range(f.num_clients) for e in client_stream(cfg, c))
    print(f"{args.preset}: {f.num_clients} clients, {cfg.data.num_tasks} tasks x {f.rounds_per_task} rounds, "
          f"{f.local_epochs} local epoch(s), head {cfg.model.head.name}, method {cfg.method.name}; "
          f"final accuracy {results['final_avg_accuracy']:.3f}")
    print(f"clients' training samples (all tasks): {samples}")
    for role, count in sorted(COUNTS.items()):
        print(f"images encoded by {role}: {count}")
    training = COUNTS["client training"] + COUNTS["prefetch"]
    print(f"training encodes (prefetch included) / samples: {training / max(samples, 1):.3f}")


if __name__ == "__main__":
    main()
