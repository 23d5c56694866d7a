"""The frozen-backbone wrapper shared by every registered backbone."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fedcl.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone expects and produces."""

    name: str
    feature_dim: int
    input_size: int  # the resolution it was pretrained at
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class FrozenBackbone(nn.Module):
    """A pretrained feature extractor: no gradients, eval mode always.

    Input: images in [0, 1], shape (N, 3, H, W). The backbone applies its own
    normalisation, so learned input transformations act in pixel space.
    ``stages`` lists the model's blocks from input to output; partial fine-tuning
    unfreezes the last ones with :meth:`unfreeze`.
    """

    def __init__(self, model: nn.Module, spec: BackboneSpec, stages: list[nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self._stages = stages
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.frozen = True
        self._trainable: list[nn.Module] = []
        #: batches run padded with zero images to a multiple of this (None: as they come); see :meth:`forward`
        self.pad_multiple: int | None = None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.eval()

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    @property
    def num_stages(self) -> int:
        return len(self._stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, multiple = images.shape[0], self.pad_multiple
        if multiple and n % multiple and not self._trainable:
            # eval mode throughout (no batch statistics), so zero rows change no other row's features
            channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
            images = torch.cat([images, images.new_zeros((-n % multiple, *images.shape[1:]))])
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            return self.model((images - self.mean) / self.std)[:n]
        return self.model((images - self.mean) / self.std)

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Frozen parts ignore train mode, so their BatchNorm statistics never move. The frozen modules are walked
        only when the model's root is in train mode (it is in eval mode from construction; only a trainable
        whole model, or a direct call on it, sets it): every client's learner switches modes, and walking
        hundreds of modules each time cost milliseconds."""
        if self.training or self.model.training:
            super().train(False)
        for module in self._trainable:
            module.train(mode)
        return self

    def place(self, device: torch.device | str, channels_last: bool = False) -> FrozenBackbone:
        """``to(device)`` (and channels-last), skipped when already done for this device and layout and the weights
        are still there: a worker's shared backbone is placed once, not once per client."""
        device = _resolved(torch.device(device))
        where = {_resolved(t.device) for t in (next(iter(self.model.parameters()), self.mean), self.mean)}
        if getattr(self, "_placed", None) != (device, channels_last) or where != {device}:
            self.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            self._placed = (device, channels_last)
        return self

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Keep only block inputs during the forward pass and recompute the rest in the backward pass
        (timm's ``set_grad_checkpointing``): the gradients are the same, the memory for activations much smaller."""
        if not hasattr(self.model, "set_grad_checkpointing"):
            if enabled:
                from fedcl.errors import ConfigError

                raise ConfigError(f"train.activation_checkpointing: backbone '{self.spec.name}' does not support it (timm backbones do)")
            return
        self.model.set_grad_checkpointing(enabled)

    def _last_stages(self, last_stages: int | None) -> list[nn.Module]:
        return [self.model] if last_stages is None else self._stages[len(self._stages) - last_stages :]

    def stage_state_keys(self, last_stages: int | None = None) -> set[str]:
        """State keys (weights and buffers) of the last ``last_stages`` stages (all when None)."""
        names = {id(t): k for k, t in self.state_dict(keep_vars=True).items()}
        return {names[id(t)] for m in self._last_stages(last_stages) for t in m.state_dict(keep_vars=True).values() if id(t) in names}

    def unfreeze(self, last_stages: int | None = None) -> list[nn.Parameter]:
        """Make the last ``last_stages`` stages (all when None) trainable; returns their parameters."""
        modules = self._last_stages(last_stages)
        self._trainable = list(modules)
        params = [p for m in modules for p in m.parameters()]
        for p in params:
            p.requires_grad_(True)
        self.frozen = False
        return params

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def fingerprint(self) -> int:
        """CRC32 of every weight and buffer: equal fingerprints mean bit-identical backbones."""
        crc = 0
        for key, value in self.model.state_dict().items():
            crc = zlib.crc32(key.encode(), crc)
            crc = zlib.crc32(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes(), crc)
        return crc


def _resolved(device: torch.device) -> torch.device:
    """``cuda`` as ``cuda:<current>`` (how tensors report their device), other devices unchanged."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


BACKBONES: Registry[Callable[..., FrozenBackbone]] = Registry("backbone", key="model.backbone")
