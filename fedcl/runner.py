"""Single-device continual learning: config in, ``results.json`` out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedcl.config import RunConfig
from fedcl.data.scenarios import Benchmark
from fedcl.methods.base import Method
from fedcl.model import ContinualModel
from fedcl.builder import make_benchmark, make_learner, make_method, make_model, resolve_device
from fedcl.metrics import count_parameters, peak_memory_mb, summarize
from fedcl.outputs import staged, write_text_atomic

RESULTS_FILE = "results.json"


def run_single_device(cfg: RunConfig, on_task_end: Callable[[int, list[float]], None] | None = None) -> dict[str, Any]:
    """Train on the whole stream and return the results dictionary."""
    start = time.perf_counter()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    benchmark = make_benchmark(cfg)
    method = make_method(cfg)
    model = make_model(cfg, benchmark, method)
    learner = make_learner(cfg, model, method, benchmark, device)
    matrix, initial = learner.fit(benchmark, on_task_end)
    trainable = [p for g in learner.param_groups for p in g["params"]]
    return {
        **describe_run(cfg, benchmark, method, model, trainable),
        "mode": "single_device",
        "accuracy_matrix": matrix.tolist(),
        **summarize(matrix, initial),
        "device": str(device),
        "wall_time_s": round(time.perf_counter() - start, 2),
        **peak_memory_mb(device),
    }


def describe_run(cfg: RunConfig, benchmark: Benchmark, method: Method, model: ContinualModel, trainable) -> dict[str, Any]:
    """The part of ``results.json`` that describes what ran (shared by single-device and federated runs)."""
    trainable_params, trainable_bytes = count_parameters(trainable)
    backbone_params, backbone_bytes = count_parameters(model.backbone.parameters())
    return {
        "config": cfg.to_dict(),
        "method": cfg.method.name,
        "plugins": sorted(cfg.method.plugins),
        "transform": cfg.model.transform.name if method.uses_transform else "none",
        "backbone": cfg.model.backbone,
        "scenario": benchmark.scenario,
        "dataset": benchmark.dataset,
        "num_tasks": benchmark.num_tasks,
        "task_classes": benchmark.task_classes,
        "trainable_params": trainable_params,
        "trainable_bytes": trainable_bytes,
        "backbone_params": backbone_params,
        "backbone_bytes": backbone_bytes,
    }


def write_results(results: dict[str, Any], out_dir: str | Path, stage: bool = False) -> Path:
    """``out_dir/results.json``, replaced in one step (the previous file stays whole until then);
    with ``stage``, its staged name, for :func:`fedcl.outputs.promote_all` to move into place."""
    path = Path(out_dir) / RESULTS_FILE
    return write_text_atomic(staged(path) if stage else path, json.dumps(results, indent=2))


#: fields of results.json measured by the clock or the OS (everything else is a function of config and seed)
WALL_CLOCK_FIELDS = ("wall_time_s", "client_train_time_s", "simulated_round_time_s", "simulated_total_time_s",
                     "real_round_time_s", "peak_rss_mb", "peak_gpu_mb")


def without_wall_clock(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` without clock-measured fields and execution-only settings (backend, workers, resume):
    two runs with the same seed and config must agree on the rest bit for bit."""
    from fedcl.federation.checkpoint import EXECUTION_KEYS

    def strip(value: Any, path: str = "") -> Any:
        if isinstance(value, dict):
            return {k: strip(v, f"{path}{k}.") for k, v in value.items()
                    if k not in WALL_CLOCK_FIELDS and f"{path}{k}".removeprefix("config.") not in EXECUTION_KEYS}
        if isinstance(value, list):
            return [strip(v, path) for v in value]
        return value

    return strip(results)
