"""Peak training memory: input tuning vs full fine-tuning at the same batch, and resident memory
of a simulation as the number of clients grows (the backbone is built once per process, not per client).

    .venv/bin/python benchmarks/memory.py [--image-size 64] [--batch-size 32]

Input tuning is measured three times: keeping the backbone's activations, recomputing them in the
backward pass (``train.activation_checkpointing=true``: timm's per-block checkpointing), and that plus the stem
and the head recomputed too (an experiment, :func:`checkpoint_stem_and_head`).

Each measurement runs in a fresh process. On the CPU, training memory is the peak resident set
size during one epoch minus the resident size just before it; on CUDA it is the peak allocated
GPU memory during the epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD_TRAIN = r"""
import copy, json, resource, sys, torch
from fedcl.config import build_config
from fedcl.builder import make_benchmark, make_learner, make_method, make_model, resolve_device
import time
method, size, batch, device, recompute = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
segments = sys.argv[6] if len(sys.argv) > 6 else "blocks"
cfg = build_config("input_tuning", None, [f"method.name={method}", f"data.image_size={size}", "data.num_tasks=1",
                                     "data.classes_per_task=10", f"data.max_train_per_class={batch // 10 * 4}",
                                     f"train.batch_size={batch}", f"train.device={device}", "train.epochs=1",
                                     f"train.activation_checkpointing={recompute}"])
dev = resolve_device(cfg.train.device)
bench = make_benchmark(cfg); m = make_method(cfg); model = make_model(cfg, bench, m)
learner = make_learner(cfg, model, m, bench, dev)
learner.cache = None  # measure training itself, not a feature cache
if segments == "all":
    sys.path.insert(0, "benchmarks")
    from memory import checkpoint_stem_and_head
    checkpoint_stem_and_head(model.backbone.model)
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before = rss()
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats(dev); base = torch.cuda.memory_allocated(dev)
start = time.perf_counter()
learner.train_experience(bench.train_stream[0])
seconds = time.perf_counter() - start
peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20 if dev.type == "cuda" else rss() - before
print(json.dumps({"method": method, "training_mb": peak, "process_peak_mb": rss(), "epoch_s": seconds}))
"""

CHILD_SIM = r"""
import json, resource, sys
from fedcl.config import build_config
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_federated
n = int(sys.argv[1])
cfg = build_config("fedsmoke", None, ["federation.backend=inline", f"federation.num_clients={n}", "data.max_train_per_class=60",
                                      "federation.evaluate_clients=false", "federation.partition=iid"], schema=FedRunConfig)
r = run_federated(cfg, sys.argv[2], quiet=True)
print(json.dumps({"clients": n, "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def checkpoint_stem_and_head(net) -> None:
    """Recompute the stem (conv_stem + bn1) and the head (conv_head + bn2) of a timm EfficientNet in the backward
    pass too, besides timm's per-block checkpointing: one segment each (an experiment: fedcl's backbones do not do this)."""
    import types

    from torch.utils.checkpoint import checkpoint

    def forward_features(self, x):
        x = checkpoint(lambda t: self.bn1(self.conv_stem(t)), x, use_reentrant=False)
        for block in (b for stage in self.blocks for b in stage):
            x = checkpoint(block, x, use_reentrant=False)
        return checkpoint(lambda t: self.bn2(self.conv_head(t)), x, use_reentrant=False)

    net.forward_features = types.MethodType(forward_features, net)


def child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clients", default="2,10,30", help="simulation sizes for resident memory ('' to skip)")
    args = parser.parse_args()
    variants = {"input_tuning": ("input_tuning", "false", "blocks"), "input_tuning+recompute": ("input_tuning", "true", "blocks"),
                "input_tuning+recompute_stem_head": ("input_tuning", "true", "all"), "finetune": ("finetune", "false", "blocks")}
    rows = {name: child(CHILD_TRAIN, m, str(args.image_size), str(args.batch_size), args.device, recompute, segments)
            for name, (m, recompute, segments) in variants.items()}
    for name, r in rows.items():
        print(f"{name:24s} training memory {r['training_mb']:8.1f} MB (process peak {r['process_peak_mb']:.0f} MB), epoch {r['epoch_s']:.2f} s")
    full = rows["finetune"]["training_mb"]
    for name in ("input_tuning", "input_tuning+recompute", "input_tuning+recompute_stem_head"):
        print(f"{name} / full fine-tuning: memory {rows[name]['training_mb'] / full:.2f}, time {rows[name]['epoch_s'] / rows['finetune']['epoch_s']:.2f} "
              f"({args.image_size} px, batch {args.batch_size}, {args.device})")
    print("simulation process (inline backend: server + all clients in one process):")
    for n in filter(None, args.clients.split(",")):
        r = child(CHILD_SIM, n, f"/tmp/fedcl-memory-{n}")
        print(f"  {r['clients']:4d} clients: peak resident {r['process_peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
