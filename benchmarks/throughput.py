"""Training images/s inside the real loop: input tuning vs full fine-tuning (and the frozen-backbone limit).

    .venv/bin/python benchmarks/throughput.py --device cuda --image-size 224 --precision auto
    .venv/bin/python benchmarks/throughput.py --device cpu --image-size 64

For each method it trains ``--batches`` batches of Fashion-MNIST through ``Learner.train_experience``
(data pipeline included) after one warm-up batch, and prints images/s and peak GPU memory. It also
times the frozen backbone's forward + input-gradient backward alone (the limit for input tuning).
Prints the device name, so figures can be reported with the hardware they came from.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch

from fedcl.backbones import create_backbone
from fedcl.config import build_config
from fedcl.builder import make_benchmark, make_learner, make_method, make_model, resolve_device
from fedcl.precision import plan_execution


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loop_throughput(method: str, args, backbone) -> tuple[float, float | None]:
    """Images/s of Learner.train_experience for ``method`` (one epoch over batches x batch_size images)."""
    n = args.batches * args.batch_size
    cfg = build_config("input_tuning", None, [f"method.name={method}", f"data.image_size={args.image_size}", "data.num_tasks=1",
                                         "data.classes_per_task=10", f"data.max_train_per_class={n // 10 + 1}",
                                         f"train.batch_size={args.batch_size}", f"train.device={args.device}",
                                         f"train.precision={args.precision}", "train.epochs=1"])
    device = resolve_device(cfg.train.device)
    benchmark = make_benchmark(cfg)
    m = make_method(cfg)
    model = make_model(cfg, benchmark, m, backbone=copy.deepcopy(backbone))
    learner = make_learner(cfg, model, m, benchmark, device)
    experience = benchmark.train_stream[0]
    warm = copy.copy(experience)
    warm.data = experience.data.subset(torch.arange(args.batch_size))
    learner.train_experience(warm)  # warm-up (allocations, cudnn autotuning)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    stats = learner.train_experience(experience)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return stats["num_examples"] / (time.perf_counter() - start), peak


def backbone_limit(args, backbone) -> float:
    """Images/s of the frozen backbone's forward + backward to its input (no data pipeline, no head)."""
    device = resolve_device(args.device)
    plan = plan_execution(device, args.precision)
    net = copy.deepcopy(backbone).to(device)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    x = plan.layout(x).requires_grad_(True)
    for i in range(args.batches + 1):
        if i == 1:
            _sync(device)
            start = time.perf_counter()
        with plan.autocast():
            loss = net(x).float().sum()
        loss.backward()
        x.grad = None
    _sync(device)
    return args.batches * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--methods", default="input_tuning,head_only,finetune")
    args = parser.parse_args()
    device = resolve_device(args.device)
    backbone = create_backbone("efficientnet_lite0")
    print(f"device: {device_name(device)} | torch {torch.__version__} | {args.image_size} px | batch {args.batch_size} | "
          f"precision {plan_execution(device, args.precision).precision}")
    limit = backbone_limit(args, backbone)
    print(f"{'frozen backbone fwd+input-grad bwd':40s} {limit:8.1f} images/s")
    for method in args.methods.split(","):
        rate, peak = loop_throughput(method, args, backbone)
        extra = f" | peak GPU {peak:.0f} MiB" if peak is not None else ""
        print(f"{method:40s} {rate:8.1f} images/s{extra}" + (f" | {rate / limit:.2f} of the limit" if method == "input_tuning" else ""))


if __name__ == "__main__":
    main()
