"""Head-only training with cached backbone features vs recomputing them every epoch.

    .venv/bin/python benchmarks/feature_cache.py [--epochs 5] [--image-size 32]

Same learner, same data, same epochs; the only difference is ``learner.cache`` (set to None
to recompute). Prints both times and their ratio (target: at least 5x).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from fedcl.backbones import create_backbone
from fedcl.config import build_config
from fedcl.builder import make_benchmark, make_learner, make_method, make_model
from fedcl.learner import FeatureCache


def timed(cache: bool, args, backbone) -> float:
    cfg = build_config("default", None, ["method.name=head_only", f"data.image_size={args.image_size}", "data.num_tasks=1",
                                         "data.classes_per_task=10", f"data.max_train_per_class={args.per_class}",
                                         f"train.epochs={args.epochs}", "train.device=cpu"])
    benchmark = make_benchmark(cfg)
    method = make_method(cfg)
    model = make_model(cfg, benchmark, method, backbone=copy.deepcopy(backbone))
    learner = make_learner(cfg, model, method, benchmark, torch.device("cpu"))
    learner.cache = FeatureCache() if cache else None
    start = time.perf_counter()
    learner.train_experience(benchmark.train_stream[0])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    backbone = create_backbone("efficientnet_lite0")
    cached, recomputed = timed(True, args, backbone), timed(False, args, backbone)
    print(f"head-only, {args.per_class * 10} images, {args.epochs} epochs, {args.image_size} px, {torch.get_num_threads()} threads")
    print(f"cached features:     {cached:7.2f} s")
    print(f"recomputed features: {recomputed:7.2f} s")
    print(f"speed-up: {recomputed / cached:.1f}x")


if __name__ == "__main__":
    main()
