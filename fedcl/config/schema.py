"""The config schema: every key's type, range and choices, and the checks that tie keys together.

Registered names (backbone, dataset, transform, head, method, plugins, aggregation) are plain
strings here; they are checked where the component is built.
"""

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedcl.config.values import (
    MAX_COUNT, MAX_IMAGE_SIZE, MAX_THREADS, Flag, Name, NonNegative, Rate, Seed,
    integer, real, text,
)
from fedcl.errors import ConfigError

Scenario = Literal["class_incremental", "task_incremental", "domain_incremental"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
LogitMask = Literal["current", "seen", "none"]
Optimizer = Literal["adam", "sgd"]
Partition = Literal["iid", "dirichlet", "shard"]
Strategy = Literal["fedavg", "fedprox", "fedadam"]
Quantization = Literal["none", "fp16", "int8"]
TaskOrder = Literal["shared", "per_client"]
Backend = Literal["ray", "inline"]
PadBatches = Literal["auto", "always", "never"]
FaultKind = Literal["crash", "timeout"]
DeviceProfileName = Literal["jetson_nano", "jetson_orin", "raspberry_pi_4", "phone", "laptop", "server", "ideal"]

#: the continual-learning scenarios (fedcl.data.scenarios builds them)
SCENARIOS: tuple[str, ...] = get_args(Scenario)
#: train.precision choices (fedcl.precision applies them)
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: which classes' logits compete in the training loss: the current task's, all seen so far, or all
LOGIT_MASKS: tuple[str, ...] = get_args(LogitMask)
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
#: the simulated device profiles (fedcl.federation.profiles holds their figures)
DEVICE_PROFILES: tuple[str, ...] = get_args(DeviceProfileName)

Device = text(r"^(auto|cpu|mps|cuda(:[0-9]{1,4})?)$", "auto, cpu, cuda, cuda:N or mps")
ClassIndex = integer(0, MAX_COUNT - 1)


class Section(BaseModel):
    """A table of the config: unknown keys fail, assignments are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True, ser_json_inf_nan="constants")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class DataConfig(Section):
    dataset: Name = "fashion_mnist"
    root: Name | None = None
    download: Flag = True  # fetch through torchvision when the files are not on disk
    image_size: integer(8, MAX_IMAGE_SIZE) = 32
    scenario: Scenario = "class_incremental"
    num_tasks: integer(1, 1000) = 5
    classes_per_task: integer(1, MAX_COUNT) = 2
    class_order: list[ClassIndex] | None = None
    shuffle_classes: Flag = True
    max_train_per_class: integer(1, 10**7) | None = None
    max_test_per_class: integer(1, 10**7) | None = None
    domains: list[Name] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "DataConfig":
        needed = self.classes_per_task if self.scenario == "domain_incremental" else self.num_tasks * self.classes_per_task
        if self.class_order is not None:
            if len(set(self.class_order)) != len(self.class_order):
                raise ConfigError(f"data.class_order must list distinct classes: got {self.class_order}")
            if len(self.class_order) < needed:
                raise ConfigError(f"data.class_order lists {len(self.class_order)} classes; data.num_tasks x data.classes_per_task need {needed}")
        if self.scenario == "domain_incremental" and self.domains is not None and len(self.domains) != self.num_tasks:
            raise ConfigError(f"data.domains lists {len(self.domains)} shifts for {self.num_tasks} tasks (data.num_tasks)")
        return self


class TransformConfig(Section):
    name: Name = "additive"
    per_task: Flag = False
    options: dict[str, Any] = Field(default_factory=dict)


class HeadConfig(Section):
    name: Name = "linear"
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(Section):
    backbone: Name = "efficientnet_lite0"
    pretrained: Flag = True
    weights: Name | None = None  # backbone weights file (.pth, .safetensors)
    transform: TransformConfig = Field(default_factory=TransformConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)


class MethodConfig(Section):
    name: Name = "input_tuning"
    options: dict[str, Any] = Field(default_factory=dict)
    #: continual-learning plugins on top of the method, by name -> options (ewc, lwf, replay, proximal, joint)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)


class TrainConfig(Section):
    epochs: integer(1, 10_000) = 1
    batch_size: integer(1, 2**16) = 64
    eval_batch_size: integer(1, 2**16) = 256
    optimizer: Optimizer = "adam"
    lr: Rate = 0.001
    head_lr: Rate = 0.01
    backbone_lr: Rate = 1e-4
    momentum: real(ge=0, le=1) = 0.9
    weight_decay: NonNegative = 0.0
    logit_mask: LogitMask = "current"
    device: Device = "auto"
    precision: Precision = "auto"  # auto (bf16/fp16 on CUDA, fp32 elsewhere), fp32, bf16, fp16
    channels_last: Flag | None = None  # null: on for CUDA, and on the CPU for a backbone run forward only (frozen features)
    gpu_memory_fraction: real(gt=0, le=1) | None = None  # cap on this process's share of GPU memory
    activation_checkpointing: Flag = False  # recompute the backbone's activations in the backward pass
    # a frozen backbone's batches padded with zero images to a multiple of min(batch_size, eval_batch_size) / 2 (auto:
    # on CUDA, where each new batch size cost ~5 s on an H200, and clients' batches come in every size)
    pad_batches: PadBatches = "auto"
    num_threads: integer(1, MAX_THREADS) | None = None


#: heads built from summed statistics (registered in fedcl.heads; named here to check combinations before any work)
STATISTICAL_HEADS = ("ncm", "lda", "ridge")
#: methods that train the backbone by gradient through the head
FINE_TUNING_METHODS = ("finetune", "partial_finetune")


class RunConfig(Section):
    """A single-device run."""

    seed: Seed = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        if self.model.head.name == "multi_head" and self.data.scenario != "task_incremental":
            raise ConfigError("model.head.name 'multi_head' needs task ids at test time: use data.scenario=task_incremental")
        if self.model.transform.per_task and self.model.transform.name == "none":
            raise ConfigError("model.transform.per_task=true needs a transform (model.transform.name is 'none')")
        if self.method.name in FINE_TUNING_METHODS and self.model.head.name in STATISTICAL_HEADS:
            raise ConfigError(f"method.name={self.method.name} trains the backbone by gradient through the head, and the "
                              f"{self.model.head.name.upper()} head (model.head.name) has no gradient: it is solved from summed "
                              "statistics (its logits are -inf until a class has some); use model.head.name=linear or cosine")
        if self.method.name in FINE_TUNING_METHODS and self.train.batch_size < 2:
            raise ConfigError(f"method.name={self.method.name} trains the backbone's BatchNorm layers, which need batches of "
                              "2 or more samples: set train.batch_size to 2 or more")
        return self
