"""Builds benchmarks, models, methods and learners from a :class:`RunConfig`.

Shared by the single-device runner and (later) the federated client/server apps.
"""

from __future__ import annotations

import dataclasses

import torch

from fedcl.backbones import FrozenBackbone, create_backbone
from fedcl.config import RunConfig
from fedcl.data import Benchmark, build_benchmark, load_dataset
from fedcl.errors import ConfigError
from fedcl.heads import create_head
from fedcl.learner import Learner, TrainSettings
from fedcl.methods import Method, Plugin, create_method, create_plugin
from fedcl.model import ContinualModel
from fedcl.transforms import create_transform


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA GPU is available here; use train.device=auto or cpu")
    return torch.device(name)


def make_benchmark(cfg: RunConfig) -> Benchmark:
    d = cfg.data
    return build_benchmark(
        load_dataset(d.dataset, d.root, d.download),
        scenario=d.scenario,
        num_tasks=d.num_tasks,
        classes_per_task=d.classes_per_task,
        class_order=d.class_order,
        shuffle_classes=d.shuffle_classes,
        max_train_per_class=d.max_train_per_class,
        max_test_per_class=d.max_test_per_class,
        domains=d.domains,
        seed=cfg.seed,
    )


def make_backbone(cfg: RunConfig) -> FrozenBackbone:
    m = cfg.model
    return create_backbone(m.backbone, pretrained=m.pretrained, weights=m.checkpoint)


def make_method(cfg: RunConfig) -> Method:
    return create_method(cfg.method.name, **cfg.method.options)


def make_plugins(cfg: RunConfig) -> list[Plugin]:
    return [create_plugin(name, **options) for name, options in cfg.method.plugins.items()]


def make_model(cfg: RunConfig, benchmark: Benchmark, method: Method, backbone: FrozenBackbone | None = None) -> ContinualModel:
    """Transform + backbone + head; the transform is the identity for methods that do not tune the input."""
    torch.manual_seed(cfg.seed)
    t = cfg.model.transform
    name = t.name if method.uses_transform else "none"
    transform = create_transform(name, cfg.data.image_size, per_task=t.per_task and name != "none", num_tasks=benchmark.num_tasks, **t.options)
    backbone = backbone or make_backbone(cfg)
    head = create_head(cfg.model.head.name, backbone.feature_dim, benchmark.num_classes, benchmark.task_classes, **cfg.model.head.options)
    return ContinualModel(transform, backbone, head)


def train_settings(cfg: RunConfig) -> TrainSettings:
    return TrainSettings(**dataclasses.asdict(cfg.train), seed=cfg.seed)


def make_learner(cfg: RunConfig, model: ContinualModel, method: Method, benchmark: Benchmark, device: torch.device) -> Learner:
    return Learner(model, method, train_settings(cfg), cfg.data.image_size, device, benchmark.task_ids_at_test, make_plugins(cfg))
