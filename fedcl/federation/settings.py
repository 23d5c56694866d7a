"""Federation settings: the ``[federation]`` table of a fedcl config."""

from __future__ import annotations

from fedcl.config import FederationConfig, FedRunConfig
from fedcl.errors import ConfigError

__all__ = ["FedRunConfig", "FederationConfig", "check_federation"]

PARTITIONS = ("iid", "dirichlet", "shard")
STRATEGIES = ("fedavg", "fedprox", "fedadam")
QUANTIZATIONS = ("none", "fp16", "int8")
TASK_ORDERS = ("shared", "per_client")
BACKENDS = ("ray", "inline")
AGGREGATIONS = ("weighted", "median", "trimmed_mean", "krum")
FAULT_KINDS = ("crash", "timeout")


def check_federation(cfg: FedRunConfig) -> None:
    f = cfg.federation
    for key, ok, need in [
        ("num_clients", f.num_clients >= 1, "at least 1"),
        ("rounds_per_task", f.rounds_per_task >= 1, "at least 1"),
        ("local_epochs", f.local_epochs >= 1, "at least 1"),
        ("dirichlet_alpha", f.dirichlet_alpha > 0, "positive"),
        ("shards_per_client", f.shards_per_client >= 1, "at least 1"),
        ("boundary_jitter", f.boundary_jitter >= 0, "at least 0"),
        ("client_eval_every", f.client_eval_every >= 0, "at least 0"),
        ("trim_fraction", 0 <= f.trim_fraction < 0.5, "in [0, 0.5)"),
        ("krum_byzantine", f.krum_byzantine >= 0, "at least 0"),
        ("max_update_norm", f.max_update_norm is None or f.max_update_norm > 0, "positive"),
        ("fault_rate", 0 <= f.fault_rate < 1, "in [0, 1)"),
        ("round_timeout_s", f.round_timeout_s > 0, "positive"),
        ("min_train_replies", f.min_train_replies >= 1, "at least 1"),
        ("dp_clipping_norm", f.dp_clipping_norm is None or f.dp_clipping_norm > 0, "positive"),
        ("dp_noise_multiplier", f.dp_noise_multiplier >= 0, "at least 0"),
        ("dp_delta", 0 < f.dp_delta < 1, "in (0, 1)"),
        ("checkpoint_every", f.checkpoint_every >= 0, "at least 0"),
        ("ray_num_cpus", f.ray_num_cpus is None or f.ray_num_cpus >= 1, "at least 1"),
        ("proximal_mu", f.proximal_mu >= 0, "at least 0"),
        ("server_lr", f.server_lr > 0, "positive"),
        ("fraction_train", 0 < f.fraction_train <= 1, "in (0, 1]"),
        ("min_available_nodes", f.min_available_nodes >= 0, "at least 0"),
        ("client_num_cpus", f.client_num_cpus > 0, "positive"),
        ("client_num_gpus", f.client_num_gpus >= 0, "at least 0"),
    ]:
        if not ok:
            raise ConfigError(f"federation.{key} must be {need}: got {getattr(f, key)}")
    for key, allowed in [("partition", PARTITIONS), ("strategy", STRATEGIES), ("quantization", QUANTIZATIONS), ("task_order", TASK_ORDERS), ("backend", BACKENDS), ("aggregation", AGGREGATIONS),
                          ("fault_kind", FAULT_KINDS)]:
        if getattr(f, key) not in allowed:
            raise ConfigError(f"federation.{key} must be one of {', '.join(allowed)}: got {getattr(f, key)!r}")
    if f.min_available_nodes > f.num_clients:
        raise ConfigError(
            f"federation.min_available_nodes={f.min_available_nodes} exceeds federation.num_clients={f.num_clients}: "
            "the server would wait forever for nodes that do not exist"
        )
    if f.min_train_replies > f.num_clients:
        raise ConfigError(f"federation.min_train_replies={f.min_train_replies} exceeds federation.num_clients={f.num_clients}: no round could reach it")
    if f.dp_noise_multiplier > 0 and f.dp_clipping_norm is None:
        raise ConfigError("federation.dp_noise_multiplier > 0 needs federation.dp_clipping_norm (the noise is scaled to the clipping norm)")
    if f.dp_clipping_norm is not None and f.aggregation != "weighted":
        raise ConfigError(f"federation.dp_clipping_norm works with federation.aggregation='weighted' (clipped mean), not {f.aggregation!r}")
    if f.dp_clipping_norm is not None and cfg.model.head.name == "ncm":
        raise ConfigError("federation.dp_clipping_norm cannot protect the NCM head: its class sums are not averaged parameters")
    if f.resume and f.checkpoint_every == 0:
        raise ConfigError("federation.resume=true needs checkpoints: federation.checkpoint_every is 0")
    fault_schedule(cfg)
    from fedcl.federation.profiles import PROFILES

    for name in f.device_profiles:
        if name not in PROFILES:
            raise ConfigError(f"federation.device_profiles: unknown profile '{name}'; choose from: {', '.join(PROFILES)}")
    if not f.device_profiles:
        raise ConfigError("federation.device_profiles must list at least one profile")


def fault_schedule(cfg: FedRunConfig) -> dict[tuple[int, int], str]:
    """``federation.fault_schedule`` as {(round, client): kind}; malformed entries fail with the entry named."""
    f = cfg.federation
    out = {}
    for entry in f.fault_schedule:
        parts = entry.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            server_round, client = int(parts[0]), int(parts[1])
        except ValueError:
            raise ConfigError(f"federation.fault_schedule: {entry!r} is not 'round:client' or 'round:client:kind'") from None
        kind = parts[2] if len(parts) == 3 else f.fault_kind
        if kind not in FAULT_KINDS:
            raise ConfigError(f"federation.fault_schedule: {entry!r} has kind {kind!r}; choose from: {', '.join(FAULT_KINDS)}")
        if not (1 <= server_round <= cfg.num_rounds and 0 <= client < f.num_clients):
            raise ConfigError(f"federation.fault_schedule: {entry!r} is outside rounds 1..{cfg.num_rounds} / clients 0..{f.num_clients - 1}")
        out[(server_round, client)] = kind
    return out
