"""Builds everything a run needs from its config, in one place (as Flower's ``task.py``): backbone,
data, model, method and learner, for the single-device runner, the ClientApp and the ServerApp alike.

ClientApps are ephemeral (one call per message), but simulation workers live for the whole
run: the frozen backbone, the decoded dataset and the client partitions are cached per
process, keyed by the settings they depend on. The partitions are also kept on disk (under
$FEDCL_DATA), so that only the first process of a run imports flwr-datasets to compute them.
"""

from __future__ import annotations

import copy
import functools
import json

import torch

from fedcl.backbones import FrozenBackbone, create_backbone
from fedcl.config import FedRunConfig, RunConfig, config_from_dict
from fedcl.data import Benchmark, build_benchmark, load_dataset
from fedcl.data.datasets import default_cache_dir
from fedcl.data.scenarios import Experience
from fedcl.federation.schedule import TaskSchedule
from fedcl.errors import ConfigError
from fedcl.heads import create_head
from fedcl.learner import FeatureCache, Learner, TrainSettings
from fedcl.methods import Method, Plugin, create_method, create_plugin
from fedcl.model import ContinualModel
from fedcl.transforms import create_transform


# ---------------------------------------------------------------------- components
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
    return create_backbone(m.backbone, pretrained=m.pretrained, weights=m.weights)


def make_method(cfg: RunConfig) -> Method:
    return create_method(cfg.method.name, **cfg.method.options)


def make_plugins(cfg: RunConfig) -> list[Plugin]:
    return [create_plugin(name, **options) for name, options in cfg.method.plugins.items()]


def seed_everything(seed: int) -> None:
    """``torch.manual_seed``, without queueing seeds for accelerators this machine lacks: where none is present,
    each call queued lazy CUDA, XPU and MTIA seeds, each capturing a stack trace (~10 ms per client model); the
    CPU generator is seeded the same either way."""
    devices = [torch.cuda, getattr(torch, "xpu", None), getattr(torch, "mtia", None), torch.backends.mps]
    if any(d is not None and d.is_available() for d in devices):
        torch.manual_seed(seed)
    else:
        torch.random.default_generator.manual_seed(seed)


def make_model(cfg: RunConfig, benchmark: Benchmark, method: Method, backbone: FrozenBackbone | None = None) -> ContinualModel:
    """Transform + backbone + head; the transform is the identity for methods that do not tune the input.
    The method declares which state keys travel (:meth:`Method.exchanged_keys`), without a learner."""
    seed_everything(cfg.seed)
    t = cfg.model.transform
    name = t.name if method.uses_transform else "none"
    transform = create_transform(name, cfg.data.image_size, per_task=t.per_task and name != "none", num_tasks=benchmark.num_tasks, **t.options)
    backbone = backbone or make_backbone(cfg)
    head = create_head(cfg.model.head.name, backbone.feature_dim, benchmark.num_classes, benchmark.task_classes, **cfg.model.head.options)
    model = ContinualModel(transform, backbone, head)
    model.exchanged_keys = method.exchanged_keys(model)
    return model


def train_settings(cfg: RunConfig) -> TrainSettings:
    return TrainSettings(**cfg.train.to_dict(), seed=cfg.seed)


def make_learner(cfg: RunConfig, model: ContinualModel, method: Method, benchmark: Benchmark, device: torch.device) -> Learner:
    return Learner(model, method, train_settings(cfg), cfg.data.image_size, device, benchmark.task_ids_at_test, make_plugins(cfg))


# ---------------------------------------------------------------------- federated: cached per worker process
@functools.lru_cache(maxsize=2)
def shared_backbone(name: str, pretrained: bool, weights: str | None) -> FrozenBackbone:
    """One frozen backbone per worker process (read-only, shared by every client it runs)."""
    return create_backbone(name, pretrained=pretrained, weights=weights)


@functools.lru_cache(maxsize=2)
def _fingerprint(name: str, pretrained: bool, weights: str | None) -> int:
    return shared_backbone(name, pretrained, weights).fingerprint()


def backbone_fingerprint(cfg: FedRunConfig) -> int:
    """CRC32 of the worker's shared frozen backbone, computed once per process (it costs ~30-100 ms
    on EfficientNet-Lite0, which used to be paid by every client in every round)."""
    m = cfg.model
    return _fingerprint(m.backbone, m.pretrained, m.weights)


def _key(cfg: FedRunConfig, *sections: str) -> str:
    """The config's ``sections`` as JSON (a key of this process's caches; pydantic's serialiser, ~4x faster than
    json.dumps of a dump: clients look their data up by it in every message)."""
    unknown = set(sections) - set(type(cfg).model_fields)
    if unknown:
        raise KeyError(f"not config sections: {sorted(unknown)}")  # pydantic's include= would drop them silently
    return cfg.model_dump_json(include=set(sections))


def _cfg_from(d: dict) -> FedRunConfig:
    return config_from_dict(d, FedRunConfig)


@functools.lru_cache(maxsize=2)
def _benchmark(key: str) -> Benchmark:
    return make_benchmark(_cfg_from(json.loads(key)))


def benchmark_for(cfg: FedRunConfig) -> Benchmark:
    return _benchmark(_key(cfg, "seed", "data"))


@functools.lru_cache(maxsize=2)
def _streams(key: str) -> list[list[Experience]]:
    from fedcl.federation.partitions import client_streams

    cfg = _cfg_from(json.loads(key))
    f = cfg.federation
    return client_streams(benchmark_for(cfg), f.partition, f.num_clients, f.dirichlet_alpha, f.shards_per_client, cfg.seed,
                          cache=default_cache_dir())


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


@functools.lru_cache(maxsize=16384)  # one entry per client and task (at most the dataset, split; 256 missed at 1,000 clients)
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


def schedule_for(cfg: FedRunConfig) -> TaskSchedule:
    f = cfg.federation
    return TaskSchedule(cfg.data.num_tasks, f.rounds_per_task, f.boundary_jitter, f.task_order, cfg.seed)


def seen_tasks(cfg: FedRunConfig, partition_id: int, server_round: int) -> list[int]:
    if trains_jointly(cfg):
        return list(range(cfg.data.num_tasks)) if server_round > 0 else []
    return schedule_for(cfg).seen_tasks(partition_id, server_round)


def build_model(cfg: FedRunConfig, benchmark: Benchmark) -> tuple[ContinualModel, Method]:
    """A fresh transform + head around the worker's shared backbone (a private copy if the method trains it)."""
    method = make_method(cfg)
    m = cfg.model
    backbone = shared_backbone(m.backbone, m.pretrained, m.weights)
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
    learner = Learner(model, method, settings, cfg.data.image_size, resolve_device(cfg.train.device), benchmark.task_ids_at_test, plugins)
    if learner.cache is not None:
        learner.cache = shared_feature_cache(_key(cfg, "model", "train", "data"))
    return learner


@functools.lru_cache(maxsize=1)
def shared_feature_cache(key: str) -> FeatureCache:
    """One cache of frozen backbone features per worker process and model/training setting (a new setting
    drops the previous cache): a simulated client encodes each of its samples once per run."""
    return FeatureCache()


def prefetch_client_features(cfg: FedRunConfig) -> int:
    """Encode every client's training samples into this process's shared per-sample cache, in large batches,
    before any client trains (frozen features, statistical head): clients' single passes become cache hits.
    The inline backend calls it (all clients share one process); Ray workers do not (each would encode the
    whole dataset for the clients it happens to run). Returns the number of samples encoded."""
    benchmark = benchmark_for(cfg)
    model, method = build_model(cfg, benchmark)
    learner = build_learner(cfg, model, method, benchmark, cfg.seed)
    if learner.cache is None or not model.head.gathers_statistics:
        return 0
    limit_threads(cfg)  # the clients' threads, as when they encode their own samples
    plugins = make_plugins(cfg)
    experiences = []
    for pid in range(cfg.federation.num_clients):
        stream = client_stream(cfg, pid)
        for plugin in plugins:
            stream = plugin.reshape_stream(stream)
        experiences += stream
    return learner.prefetch_features(experiences)


def derived_seed(seed: int, partition_id: int, server_round: int) -> int:
    """Per-client, per-round randomness from the seed and partition id (never from scheduling order)."""
    return (seed * 1_000_003 + partition_id * 7_919 + server_round) % (2**31)


def load_state(model: ContinualModel, state: dict[str, torch.Tensor]) -> None:
    own = model.state_of(list(state))
    for key, value in state.items():
        own[key].copy_(value)


def limit_threads(cfg: FedRunConfig) -> None:
    """Use as many torch threads as CPUs the worker was given (no oversubscription)."""
    wanted = cfg.train.num_threads or max(1, int(cfg.federation.client_num_cpus))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
