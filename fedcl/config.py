"""Run configuration: typed dataclasses, TOML/JSON files, presets and ``--set key=value`` overrides.

Precedence: defaults <- preset <- config file <- overrides. Unknown keys and
wrong types fail with a one-line :class:`~fedcl.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fedcl.data.scenarios import SCENARIOS
from fedcl.errors import ConfigError

#: which classes' logits compete in the training loss: the current task's, all seen so far, or all
LOGIT_MASKS = ("current", "seen", "none")


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"
    root: str | None = None
    download: bool = True  # fetch through torchvision when the files are not on disk
    image_size: int = 32
    scenario: str = "class_incremental"
    num_tasks: int = 5
    classes_per_task: int = 2
    class_order: list[int] | None = None
    shuffle_classes: bool = True
    max_train_per_class: int | None = None
    max_test_per_class: int | None = None
    domains: list[str] | None = None


@dataclass
class TransformConfig:
    name: str = "additive"
    per_task: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class HeadConfig:
    name: str = "linear"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    checkpoint: str | None = None
    transform: TransformConfig = field(default_factory=TransformConfig)
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class MethodConfig:
    name: str = "input_tuning"
    options: dict[str, Any] = field(default_factory=dict)
    #: continual-learning plugins on top of the method, by name -> options (ewc, lwf, replay, proximal, joint)
    plugins: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 64
    eval_batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 0.001
    head_lr: float = 0.01
    backbone_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    logit_mask: str = "current"
    device: str = "auto"
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 elsewhere), fp32, bf16, fp16
    channels_last: bool | None = None  # null: on for CUDA
    gpu_memory_fraction: float | None = None  # cap on this process's share of GPU memory
    activation_checkpointing: bool = False  # recompute the backbone's activations in the backward pass: less memory, more compute
    num_threads: int | None = None


@dataclass
class RunConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FederationConfig:
    num_clients: int = 10
    rounds_per_task: int = 3
    local_epochs: int = 1
    partition: str = "dirichlet"
    dirichlet_alpha: float = 0.5
    shards_per_client: int = 2
    task_order: str = "shared"
    boundary_jitter: int = 1  # rounds by which a client's task boundaries may lag the nominal ones
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    server_lr: float = 0.01
    fraction_train: float = 1.0
    min_available_nodes: int = 0  # 0 -> num_clients
    quantization: str = "none"
    aggregation: str = "weighted"  # weighted (class/task-aware FedAvg), median, trimmed_mean, krum
    trim_fraction: float = 0.2  # trimmed_mean: share of clients cut at each end, per coordinate
    krum_byzantine: int = 1  # krum: how many malicious clients to tolerate
    max_update_norm: float | None = None  # refuse updates that move the state further than this (L2)
    fault_rate: float = 0.0  # injected: probability that a client fails in a round (robustness experiments)
    fault_kind: str = "crash"  # what an injected fault does: "crash" (the ClientApp raises) or "timeout" (replies too late)
    fault_schedule: list[str] = field(default_factory=list)  # scheduled faults, "round:client" or "round:client:kind"
    round_timeout_s: float = 600.0  # replies arriving later are dropped and counted as timed out
    min_train_replies: int = 1  # a round with fewer valid updates keeps the global model (and says so)
    dp_clipping_norm: float | None = None  # central DP: clip each client's update to this L2 norm (Flower's fixed clipping)
    dp_noise_multiplier: float = 0.0  # central DP: Gaussian noise std = multiplier * clipping_norm / sampled clients
    dp_delta: float = 1e-5  # central DP: the delta at which epsilon is reported (results.json["privacy"]), in (0, 1)
    checkpoint_every: int = 1  # the server checkpoints every k rounds (0: never)
    resume: bool = False  # continue from the checkpoint in the output folder
    device_profiles: list[str] = field(default_factory=lambda: ["jetson_nano", "raspberry_pi_4", "phone", "laptop"])
    backend: str = "ray"  # "ray": Flower's simulation engine; "inline": every client in this process, one after another
    client_num_cpus: float = 1.0
    client_num_gpus: float = 0.0
    ray_address: str | None = None
    ray_num_cpus: int | None = None  # CPUs the local Ray cluster may use (workers = ray_num_cpus / client_num_cpus)
    evaluate_clients: bool = True
    client_eval_every: int = 0  # clients also evaluate every k rounds (0: only after the last round)
    evaluate_every_round: bool = True  # false: the server evaluates only at task boundaries (enough for the accuracy matrix)
    node_wait_s: float = 60.0  # how long the server waits for min_available_nodes before failing


@dataclass
class FedRunConfig(RunConfig):
    federation: FederationConfig = field(default_factory=FederationConfig)

    @property
    def num_rounds(self) -> int:
        return self.data.num_tasks * self.federation.rounds_per_task


# ---------------------------------------------------------------------- validation
def _check_type(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        concrete = [a for a in args if a is not type(None)]
        if len(concrete) == 1:  # "X or null": X's own, more precise, error
            return _check_type(key, value, concrete[0])
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table of options, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _type_name(hint: Any) -> str:
    return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in typing.get_args(hint)) or str(hint)


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a table, got {value!r}")
            _apply(current, value, f"{full}.")
        elif typing.get_origin(hints[key]) is dict and isinstance(value, dict):
            setattr(obj, key, {**current, **value})
        else:
            setattr(obj, key, _check_type(full, value, hints[key]))


def _positive(cfg: RunConfig) -> None:
    checks = {
        "data.image_size": cfg.data.image_size >= 8,
        "data.num_tasks": cfg.data.num_tasks >= 1,
        "data.classes_per_task": cfg.data.classes_per_task >= 1,
        "data.max_train_per_class": cfg.data.max_train_per_class is None or cfg.data.max_train_per_class >= 1,
        "data.max_test_per_class": cfg.data.max_test_per_class is None or cfg.data.max_test_per_class >= 1,
        "train.epochs": cfg.train.epochs >= 1,
        "train.batch_size": cfg.train.batch_size >= 1,
        "train.eval_batch_size": cfg.train.eval_batch_size >= 1,
        "train.lr": cfg.train.lr > 0,
        "train.head_lr": cfg.train.head_lr > 0,
        "train.backbone_lr": cfg.train.backbone_lr > 0,
        "train.weight_decay": cfg.train.weight_decay >= 0,
        "train.num_threads": cfg.train.num_threads is None or cfg.train.num_threads >= 1,
        "train.gpu_memory_fraction": cfg.train.gpu_memory_fraction is None or 0 < cfg.train.gpu_memory_fraction <= 1,
    }
    for key, ok in checks.items():
        if not ok:
            need = {"data.image_size": "at least 8", "train.gpu_memory_fraction": "in (0, 1]"}.get(key)
            need = need or ("positive" if key.startswith("train.") and "lr" in key else "at least 1")
            raise ConfigError(f"{key} must be {need}: got {_get(cfg, key)}")
    choices = {
        "train.optimizer": ("adam", "sgd"),
        "train.logit_mask": LOGIT_MASKS,
        "train.precision": ("auto", "fp32", "bf16", "fp16"),
        "data.scenario": SCENARIOS,
    }
    for key, allowed in choices.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}: got {_get(cfg, key)!r}")
    if not (cfg.train.device in ("auto", "cpu", "cuda", "mps") or cfg.train.device.startswith("cuda:")):
        raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps: got {cfg.train.device!r}")
    if cfg.model.head.name == "multi_head" and cfg.data.scenario != "task_incremental":
        raise ConfigError("model.head.name 'multi_head' needs task ids at test time: use data.scenario=task_incremental")
    if cfg.model.transform.per_task and cfg.model.transform.name == "none":
        raise ConfigError("model.transform.per_task=true needs a transform (model.transform.name is 'none')")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: RunConfig) -> RunConfig:
    """Check ranges, choices and registered names; returns ``cfg``."""
    _positive(cfg)
    if hasattr(cfg, "federation"):
        from fedcl.federation.settings import check_federation

        check_federation(cfg)
    from fedcl.backbones import BACKBONES
    from fedcl.data.datasets import DATASETS
    from fedcl.heads import HEADS
    from fedcl.transforms import TRANSFORMS

    if not cfg.model.backbone.startswith(("timm:", "torchvision:")):
        BACKBONES.get(cfg.model.backbone)
    DATASETS.get(cfg.data.dataset)
    TRANSFORMS.get(cfg.model.transform.name)
    HEADS.get(cfg.model.head.name)
    from fedcl.methods import create_method, create_plugin

    create_method(cfg.method.name, **cfg.method.options)
    for name, options in cfg.method.plugins.items():
        if not isinstance(options, dict):
            raise ConfigError(f"method.plugins.{name}: expected a table of options (use {{}} for none), got {options!r}")
        create_plugin(name, **options)
    return cfg


# ---------------------------------------------------------------------- sources
def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (numbers, true/false, [lists], "strings"); bare words are strings, null is None."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{text}' is not key=value")
    raw = raw.strip()
    if raw == "null":
        return key, None
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}' conflicts with another override")
        node[parts[-1]] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table")
    # A results.json embeds its config: accept it directly to re-run a result.
    return data["config"] if "config" in data and isinstance(data["config"], dict) and "accuracy_matrix" in data else data


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("fedcl.presets").iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ConfigError(f"unknown preset '{name}'; choose from: {', '.join(preset_names())}")
    return tomllib.loads(resources.files("fedcl.presets").joinpath(f"{name}.toml").read_text())


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    schema: type | None = None,
) -> Any:
    """Assemble and validate a config from its sources (default schema: :class:`FedRunConfig`,
    so one file serves single-device and federated runs)."""
    schema = schema or FedRunConfig
    cfg = schema()
    if preset:
        _apply(cfg, read_preset(preset))
    if config_file:
        _apply(cfg, read_config_file(config_file))
    if overrides:
        _apply(cfg, nest(dict(parse_override(o) for o in overrides)))
    return validate(cfg)


def config_from_dict(values: dict[str, Any], schema: type | None = None) -> Any:
    cfg = (schema or FedRunConfig)()
    _apply(cfg, values)
    return validate(cfg)
