"""Mixed precision, memory layout and memory caps for the training loop (edge GPUs).

``train.precision`` (choices: :data:`fedcl.config.PRECISIONS`): ``auto`` (bf16 on CUDA GPUs that support it, else fp16 on CUDA, fp32 elsewhere),
``fp32``, ``bf16`` or ``fp16`` (with gradient scaling). ``train.channels_last``: null -> on for CUDA.
``train.gpu_memory_fraction``: cap this process's share of the GPU memory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from fedcl.config import PRECISIONS
from fedcl.deferred_dynamo import dynamo_deferred
from fedcl.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    if name not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}: got {name!r}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@dataclass
class ExecutionPlan:
    device: torch.device
    precision: str
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 gradients underflow without loss scaling; bf16 and fp32 need none."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last and images.ndim == 4 else images

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
        """One optimizer step; its calls into ``torch.optim`` do not import ``torch._dynamo`` (:mod:`fedcl.deferred_dynamo`)."""
        with dynamo_deferred():
            optimizer.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()
        with dynamo_deferred():
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()


def plan_execution(device: torch.device, precision: str = "auto", channels_last: bool | None = None,
                   gpu_memory_fraction: float | None = None) -> ExecutionPlan:
    if gpu_memory_fraction is not None and device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(gpu_memory_fraction, device)
    return ExecutionPlan(device, resolve_precision(precision, device), device.type == "cuda" if channels_last is None else channels_last)
