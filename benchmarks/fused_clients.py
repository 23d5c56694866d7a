"""Fused clients (one backbone pass for many clients, ``fedcl/fused.py``) vs one client at a time.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/fused_clients.py [--clients 1,4,16,64] [--image-sizes 32,64]
        [--images-per-client 32] [--repeats 3] [--device cpu] [--threads N] [--json runs/fused_clients.json]

Each client holds ``--images-per-client`` random images of 10 classes and trains one local epoch of input tuning
(additive transform + linear head, Adam, batch 32). "sequential" trains the clients one after another in
fedcl's learner (``Learner.train_experience``; each client's model is built before the clock starts, so
this is the sequential loop's best case); "fused" trains all of them with ``fused_epoch``, in backbone passes
of at most ``--max-samples`` samples. Prints images/s (mean and sample std over the repeats) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fedcl.backbones import FrozenBackbone, create_backbone
from fedcl.data.arrays import ImageArrays
from fedcl.data.scenarios import Experience
from fedcl.fused import FusedClients, fused_epoch
from fedcl.heads import create_head
from fedcl.learner import Learner, TrainSettings
from fedcl.methods import create_method
from fedcl.model import ContinualModel
from fedcl.precision import plan_execution
from fedcl.transforms import create_transform

NUM_CLASSES = 10


def client_data(clients: int, per_client: int, seed: int = 0) -> list[Experience]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (clients, per_client, 1, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (clients, per_client), generator=gen)
    return [Experience(0, list(range(NUM_CLASSES)), ImageArrays(images[k], labels[k])) for k in range(clients)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sequential_seconds(backbone: FrozenBackbone, experiences: list[Experience], image_size: int, device: torch.device, settings: TrainSettings) -> float:
    """Seconds for every client's local epoch in fedcl's learner, one client after another."""
    learners = []
    for k in range(len(experiences)):
        model = ContinualModel(create_transform("additive", image_size), backbone, create_head("linear", backbone.feature_dim, NUM_CLASSES))
        settings.seed = k
        learners.append(Learner(model, create_method("input_tuning"), settings, image_size, device))
    _sync(device)
    start = time.perf_counter()
    for learner, experience in zip(learners, experiences):
        learner.train_experience(experience)
    _sync(device)
    return time.perf_counter() - start


def fused_seconds(backbone: FrozenBackbone, experiences: list[Experience], image_size: int, device: torch.device, settings: TrainSettings,
                  max_samples: int) -> float:
    """Seconds for the same local epochs, all clients fused."""
    transform, head = create_transform("additive", image_size).to(device), create_head("linear", backbone.feature_dim, NUM_CLASSES).to(device)
    plan = plan_execution(device, settings.precision)
    fused = FusedClients(transform, backbone, head, [transform.state_dict()] * len(experiences), [head.state_dict()] * len(experiences),
                         settings.lr, settings.head_lr, autocast=plan.autocast() if plan.precision != "fp32" else None)
    masks = torch.ones(len(experiences), NUM_CLASSES, dtype=torch.bool)
    orders = [torch.randperm(len(e), generator=torch.Generator().manual_seed(k)) for k, e in enumerate(experiences)]
    data = [(e.data.images, e.data.labels) for e in experiences]
    _sync(device)
    start = time.perf_counter()
    fused_epoch(fused, data, orders, settings.batch_size, image_size, masks, device, max_samples)
    _sync(device)
    return time.perf_counter() - start


def measure(clients: int, per_client: int, image_size: int, device: torch.device, precision: str = "fp32", repeats: int = 3,
            max_samples: int = 256, backbone: FrozenBackbone | None = None) -> dict:
    """images/s of sequential and fused clients (mean, sample std over ``repeats`` after one warm-up)."""
    backbone = (backbone or create_backbone("efficientnet_lite0")).to(device)
    settings = TrainSettings(batch_size=32, precision=precision, device=str(device), epochs=1)
    experiences = client_data(clients, per_client)
    images = clients * per_client
    rates: dict[str, list[float]] = {"sequential": [], "fused": []}
    for r in range(repeats + 1):
        seq = sequential_seconds(backbone, experiences, image_size, device, settings)
        fus = fused_seconds(backbone, experiences, image_size, device, settings, max_samples)
        if r:  # the first repeat warms up allocators and kernels
            rates["sequential"].append(images / seq)
            rates["fused"].append(images / fus)
    row = {"clients": clients, "images_per_client": per_client, "image_size": image_size, "repeats": repeats}
    for name, values in rates.items():
        row[f"{name}_images_per_s"] = statistics.mean(values)
        row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    row["fused_over_sequential"] = row["fused_images_per_s"] / row["sequential_images_per_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--image-sizes", default="32,64")
    parser.add_argument("--images-per-client", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-samples", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default="runs/fused_clients.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for size in map(int, args.image_sizes.split(",")):
        backbone = create_backbone("efficientnet_lite0")
        for n in map(int, args.clients.split(",")):
            row = measure(n, args.images_per_client, size, device, repeats=args.repeats, max_samples=args.max_samples, backbone=backbone)
            rows.append(row)
            print(f"{size:4d} px {n:3d} clients: sequential {row['sequential_images_per_s']:7.1f} ± {row['sequential_std']:5.1f} images/s, "
                  f"fused {row['fused_images_per_s']:7.1f} ± {row['fused_std']:5.1f}, ratio {row['fused_over_sequential']:.2f}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
