"""What a worker process builds once and reuses across rounds and clients.

ClientApps are ephemeral (one call per message), but Ray workers live for the
whole simulation: the frozen backbone, the decoded dataset and the client
partitions are cached per process, keyed by the settings they depend on.
"""

from __future__ import annotations

import copy
import functools
import json

import torch

from fedcl.backbones import FrozenBackbone, create_backbone
from fedcl.config import config_from_dict
from fedcl.data.scenarios import Benchmark, Experience
from fedcl.factory import make_benchmark, make_method, make_model, make_plugins, resolve_device, train_settings
from fedcl.federation.partitions import client_streams
from fedcl.federation.schedule import TaskSchedule
from fedcl.federation.settings import FedRunConfig
from fedcl.learner import Learner
from fedcl.methods import Method, create_plugin
from fedcl.model import ContinualModel


@functools.lru_cache(maxsize=2)
def shared_backbone(name: str, pretrained: bool, weights: str | None) -> FrozenBackbone:
    """One frozen backbone per worker process (read-only, shared by every client it runs)."""
    return create_backbone(name, pretrained=pretrained, weights=weights)


def _key(cfg: FedRunConfig, *sections: str) -> str:
    d = cfg.to_dict()
    return json.dumps({s: d[s] for s in sections}, sort_keys=True)


def _cfg_from(d: dict) -> FedRunConfig:
    return config_from_dict(d, FedRunConfig)


@functools.lru_cache(maxsize=2)
def _benchmark(key: str) -> Benchmark:
    return make_benchmark(_cfg_from(json.loads(key)))


def benchmark_for(cfg: FedRunConfig) -> Benchmark:
    return _benchmark(_key(cfg, "seed", "data"))


@functools.lru_cache(maxsize=2)
def _streams(key: str) -> list[list[Experience]]:
    cfg = _cfg_from(json.loads(key))
    f = cfg.federation
    return client_streams(benchmark_for(cfg), f.partition, f.num_clients, f.dirichlet_alpha, f.shards_per_client, cfg.seed)


def client_stream(cfg: FedRunConfig, partition_id: int) -> list[Experience]:
    return _streams(_key(cfg, "seed", "data", "federation"))[partition_id]


def trains_jointly(cfg: FedRunConfig) -> bool:
    """Joint training (the upper bound): every client trains on all its tasks every round."""
    return "joint" in cfg.method.plugins


def with_local_data(cfg: FedRunConfig, data_root: str | None) -> FedRunConfig:
    """The config as a SuperNode with its own dataset at ``data_root`` sees it."""
    if not data_root:
        return cfg
    local = copy.deepcopy(cfg)
    local.data.root = data_root
    local.data.download = False
    return local


@functools.lru_cache(maxsize=256)
def _training_experience(key: str, partition_id: int, task: int, data_root: str | None) -> Experience:
    cfg = _cfg_from(json.loads(key))
    # a node with its own data trains on all of it; otherwise on its partition of the shared dataset
    stream = benchmark_for(with_local_data(cfg, data_root)).train_stream if data_root else client_stream(cfg, partition_id)
    for plugin in make_plugins(cfg):
        stream = plugin.reshape_stream(stream)
    return stream[task] if len(stream) == cfg.data.num_tasks else stream[-1]


def training_experience(cfg: FedRunConfig, partition_id: int, task: int, data_root: str | None = None) -> Experience:
    """What a client trains on in a round of ``task`` (its merged data under joint training)."""
    return _training_experience(_key(cfg, "seed", "data", "federation", "method"), partition_id, task, data_root)


def seen_tasks(cfg: FedRunConfig, partition_id: int, server_round: int) -> list[int]:
    if trains_jointly(cfg):
        return list(range(cfg.data.num_tasks)) if server_round > 0 else []
    return schedule_for(cfg).seen_tasks(partition_id, server_round)


def schedule_for(cfg: FedRunConfig) -> TaskSchedule:
    f = cfg.federation
    return TaskSchedule(cfg.data.num_tasks, f.rounds_per_task, f.boundary_jitter, f.task_order, cfg.seed)


def build_model(cfg: FedRunConfig, benchmark: Benchmark) -> tuple[ContinualModel, Method]:
    """A fresh transform + head around the worker's shared backbone (a private copy if the method trains it)."""
    method = make_method(cfg)
    m = cfg.model
    backbone = shared_backbone(m.backbone, m.pretrained, m.checkpoint)
    if method.trains_backbone:
        backbone = copy.deepcopy(backbone)
    return make_model(cfg, benchmark, method, backbone=backbone), method


def build_learner(cfg: FedRunConfig, model: ContinualModel, method: Method, benchmark: Benchmark, seed: int) -> Learner:
    """A learner with the config's plugins; FedProx adds its proximal term unless one is configured."""
    settings = train_settings(cfg)
    settings.seed = seed
    settings.epochs = cfg.federation.local_epochs
    plugins = make_plugins(cfg)
    if cfg.federation.strategy == "fedprox" and "proximal" not in cfg.method.plugins:
        plugins.append(create_plugin("proximal", mu=cfg.federation.proximal_mu))
    return Learner(model, method, settings, cfg.data.image_size, resolve_device(cfg.train.device), benchmark.task_ids_at_test, plugins)


def derived_seed(seed: int, partition_id: int, server_round: int) -> int:
    """Per-client, per-round randomness from the seed and partition id (never from scheduling order)."""
    return (seed * 1_000_003 + partition_id * 7_919 + server_round) % (2**31)


def load_state(model: ContinualModel, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for key, value in state.items():
        own[key].copy_(value)


def limit_threads(cfg: FedRunConfig) -> None:
    """Use as many torch threads as CPUs the worker was given (no oversubscription)."""
    wanted = cfg.train.num_threads or max(1, int(cfg.federation.client_num_cpus))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
