"""Additive full-image perturbation: x + delta, one learned value per pixel and channel."""

from __future__ import annotations

import torch
from torch import nn

from fedcl.transforms.base import TRANSFORMS, InputTransform


@TRANSFORMS.register("additive")
class AdditivePerturbation(InputTransform):
    def __init__(self, image_size: int, channels: int = 3) -> None:
        super().__init__(image_size, channels)
        self.delta = nn.Parameter(torch.zeros(1, channels, image_size, image_size))

    def apply_transform(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.delta
