"""The ``[federation]`` table and a federated run's config (:class:`FedRunConfig`)."""

from pydantic import Field, model_validator

from fedcl.config.schema import (
    FAULT_KINDS, STATISTICAL_HEADS, Backend, DeviceProfileName, FaultKind, Partition, Quantization, RunConfig, Section, Strategy,
    TaskOrder,
)
from fedcl.config.values import (
    MAX_WAIT_S, Count, CountOrZero, Flag, Name, NonNegative, Rate, integer, real,
)
from fedcl.errors import ConfigError


def ray_is_local(address: str | None) -> bool:
    """True when ``federation.ray_address`` means a new cluster on this machine (unset, empty or "local")."""
    return address in (None, "", "local")


class FederationConfig(Section):
    num_clients: Count = 10
    rounds_per_task: integer(1, 10_000) = 3
    local_epochs: integer(1, 10_000) = 1
    partition: Partition = "dirichlet"
    dirichlet_alpha: Rate = 0.5
    shards_per_client: integer(1, 10_000) = 2
    task_order: TaskOrder = "shared"
    boundary_jitter: integer(0, 10_000) = 1  # rounds by which a client's task boundaries may lag the nominal ones
    strategy: Strategy = "fedavg"
    proximal_mu: NonNegative = 0.01
    server_lr: Rate = 0.01
    fraction_train: real(gt=0, le=1) = 1.0
    min_available_nodes: CountOrZero = 0  # 0 -> num_clients
    quantization: Quantization = "none"
    gram_factor: Flag = True  # a client with few samples sends its Gram change as an n x D factor (docs/federated_statistics.md)
    aggregation: Name = "weighted"  # a registered aggregator, checked where it is built
    trim_fraction: real(ge=0, lt=0.5) = 0.2  # trimmed_mean: share of clients cut at each end, per coordinate
    krum_byzantine: CountOrZero = 1  # krum: how many malicious clients to tolerate
    max_update_norm: Rate | None = None  # refuse updates that move the state further than this (L2)
    fault_rate: real(ge=0, lt=1) = 0.0  # injected: probability that a client fails in a round (robustness experiments)
    fault_kind: FaultKind = "crash"  # what an injected fault does: the ClientApp raises, or replies too late
    fault_schedule: list[Name] = Field(default_factory=list)  # scheduled faults, "round:client" or "round:client:kind"
    round_timeout_s: real(gt=0, le=MAX_WAIT_S) = 600.0  # replies arriving later are dropped and counted as timed out
    min_train_replies: Count = 1  # a round with fewer valid updates keeps the global model (and says so)
    dp_clipping_norm: Rate | None = None  # central DP: clip each client's update to this L2 norm
    dp_noise_multiplier: real(ge=0, le=1e6) = 0.0  # central DP: noise std = multiplier * clipping_norm / sampled clients
    dp_delta: real(gt=0, lt=1) = 1e-5  # central DP: the delta at which epsilon is reported (results.json["privacy"])
    checkpoint_every: CountOrZero = 1  # the server checkpoints every k rounds (0: never)
    resume: Flag = False  # continue from the checkpoint in the output folder
    device_profiles: list[DeviceProfileName] = Field(default_factory=lambda: ["jetson_nano", "raspberry_pi_4", "phone", "laptop"],
                                                     min_length=1)
    backend: Backend = "ray"  # "ray": Flower's simulation engine; "inline": every client in this process, one after another
    client_num_cpus: real(gt=0, le=4096) = 1.0
    client_num_gpus: real(ge=0, le=1024) = 0.0
    ray_address: Name | None = None
    ray_num_cpus: integer(1, 4096) | None = None  # CPUs the local Ray cluster may use (workers = ray_num_cpus / client_num_cpus)
    evaluate_clients: Flag = True
    client_eval_every: CountOrZero = 0  # clients also evaluate every k rounds (0: only after the last round)
    evaluate_every_round: Flag = True  # false: the server evaluates only at task boundaries
    node_wait_s: real(gt=0, le=MAX_WAIT_S) = 60.0  # how long the server waits for min_available_nodes (and at least this for a new node's first reply)

    @model_validator(mode="after")
    def _consistent(self) -> "FederationConfig":
        for key in ("min_available_nodes", "min_train_replies"):
            if getattr(self, key) > self.num_clients:
                why = "the server would wait forever for nodes that do not exist" if key == "min_available_nodes" else "no round could reach it"
                raise ConfigError(f"federation.{key}={getattr(self, key)} exceeds federation.num_clients={self.num_clients}: {why}")
        if self.aggregation == "krum" and self.krum_byzantine >= self.num_clients:
            raise ConfigError(f"federation.krum_byzantine={self.krum_byzantine} must be below federation.num_clients={self.num_clients}")
        if self.dp_noise_multiplier > 0 and self.dp_clipping_norm is None:
            raise ConfigError("federation.dp_noise_multiplier > 0 needs federation.dp_clipping_norm (the noise is scaled to the clipping norm)")
        if self.dp_clipping_norm is not None and self.aggregation != "weighted":
            raise ConfigError(f"federation.dp_clipping_norm works with federation.aggregation='weighted' (clipped mean), not {self.aggregation!r}")
        if self.resume and self.checkpoint_every == 0:
            raise ConfigError("federation.resume=true needs checkpoints: federation.checkpoint_every is 0")
        if self.ray_num_cpus is not None and self.client_num_cpus > self.ray_num_cpus and ray_is_local(self.ray_address):
            raise ConfigError(f"federation.client_num_cpus={self.client_num_cpus} exceeds federation.ray_num_cpus={self.ray_num_cpus}: "
                              "Ray could place no client")
        return self


class FedRunConfig(RunConfig):
    """A federated run: a single-device run's tables plus ``[federation]``."""

    federation: FederationConfig = Field(default_factory=FederationConfig)

    @property
    def num_rounds(self) -> int:
        return self.data.num_tasks * self.federation.rounds_per_task

    @model_validator(mode="after")
    def _federated_consistent(self) -> "FedRunConfig":
        f = self.federation
        if f.dp_clipping_norm is not None and self.model.head.name in STATISTICAL_HEADS:
            raise ConfigError(f"federation.dp_clipping_norm cannot protect the {self.model.head.name.upper()} head (model.head.name): "
                              "its summed statistics are not averaged parameters; turn central DP off or use a trained head")
        _check_shards(self)
        fault_schedule(self)
        return self


def _check_shards(cfg: FedRunConfig) -> None:
    """Shards must not outnumber the training samples, when the config alone bounds them."""
    f, d = cfg.federation, cfg.data
    if f.partition != "shard" or d.max_train_per_class is None or d.scenario == "domain_incremental":
        return
    samples = d.max_train_per_class * d.num_tasks * d.classes_per_task
    if f.shards_per_client * f.num_clients > samples:
        raise ConfigError(f"federation.shards_per_client x federation.num_clients = {f.shards_per_client * f.num_clients} shards "
                          f"exceed the {samples} training samples (data.max_train_per_class x tasks x classes)")


def fault_schedule(cfg: FedRunConfig) -> dict[tuple[int, int], str]:
    """``federation.fault_schedule`` as {(round, client): kind}; malformed entries fail with the entry named."""
    f = cfg.federation
    out: dict[tuple[int, int], str] = {}
    for entry in f.fault_schedule:
        parts = entry.split(":")
        try:
            if len(parts) not in (2, 3) or not all(p.strip().isdigit() for p in parts[:2]):
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

