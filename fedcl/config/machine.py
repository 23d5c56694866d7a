"""Checks that a config asks for nothing this machine lacks: CPUs, GPUs, devices, fast precisions.

Run where the work runs (``fedcl train``/``simulate``), not where a config is merely read.
"""

import os
import re
from dataclasses import dataclass
from typing import Any

from fedcl.config.federation import ray_is_local
from fedcl.errors import ConfigError


@dataclass(frozen=True)
class Machine:
    """What this machine offers."""

    cpus: int
    cuda_devices: int
    mps: bool

    @classmethod
    def here(cls) -> "Machine":
        import torch

        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        return cls(os.cpu_count() or 1, cuda, mps)


def _device_type(device: str, machine: Machine) -> str:
    """``train.device`` as the training loop resolves it: cuda, mps or cpu."""
    if device == "auto":
        return "cuda" if machine.cuda_devices else "mps" if machine.mps else "cpu"
    return device.split(":")[0]


def check_device(train: Any, machine: Machine) -> None:
    device = train.device
    if device.startswith("cuda"):
        index = int(m.group(1)) if (m := re.fullmatch(r"cuda:(\d+)", device)) else 0
        if machine.cuda_devices == 0:
            raise ConfigError(f"train.device={device} needs a CUDA GPU; this machine has none (use train.device=auto or cpu)")
        if index >= machine.cuda_devices:
            raise ConfigError(f"train.device={device} is not a GPU of this machine (it has cuda:0..cuda:{machine.cuda_devices - 1})")
    if device == "mps" and not machine.mps:
        raise ConfigError("train.device=mps needs Apple's Metal (MPS); it is not available here (use train.device=auto or cpu)")
    if train.precision in ("fp16", "bf16") and _device_type(device, machine) == "cpu":
        raise ConfigError(f"train.precision={train.precision} on a CPU would be much slower than fp32: use train.precision=fp32 or auto")


def check_resources(federation: Any, machine: Machine) -> None:
    """Ray resources a local simulation asks for (a cluster at ``ray_address`` has its own)."""
    f = federation
    if f.backend != "ray" or not ray_is_local(f.ray_address):
        return
    if f.client_num_cpus > machine.cpus:
        raise ConfigError(f"federation.client_num_cpus={f.client_num_cpus:g} exceeds the {machine.cpus} CPUs of this machine: "
                          "Ray could place no client (lower it, or set federation.ray_address to a cluster)")
    if f.client_num_gpus > machine.cuda_devices:
        have = f"{machine.cuda_devices} CUDA GPU(s)" if machine.cuda_devices else "no CUDA GPU"
        raise ConfigError(f"federation.client_num_gpus={f.client_num_gpus:g} asks for more GPUs than this machine has ({have}): "
                          "Ray could place no client")


def check_machine(cfg: Any, machine: Machine | None = None) -> None:
    """Refuse what this machine cannot do (one line naming the key)."""
    machine = machine or Machine.here()
    check_device(cfg.train, machine)
    if hasattr(cfg, "federation"):
        check_resources(cfg.federation, machine)
