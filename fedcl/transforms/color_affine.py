"""Colour transform: a learned 3x3 colour matrix and per-channel offset (12 parameters)."""

from __future__ import annotations

import torch
from torch import nn

from fedcl.transforms.base import TRANSFORMS, InputTransform


@TRANSFORMS.register("color")
class ColorAffine(InputTransform):
    """y_c = sum_k M[c, k] x_k + b_c, with M = I and b = 0 at start.

    ``per_channel=True`` keeps M diagonal (6 parameters: a gain and an offset per channel).
    """

    def __init__(self, image_size: int, channels: int = 3, per_channel: bool = False) -> None:
        super().__init__(image_size, channels)
        self.per_channel = per_channel
        self.matrix = nn.Parameter(torch.zeros(channels) if per_channel else torch.zeros(channels, channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def apply_transform(self, images: torch.Tensor) -> torch.Tensor:
        bias = self.bias.view(1, -1, 1, 1)
        if self.per_channel:
            return images * (1 + self.matrix).view(1, -1, 1, 1) + bias
        matrix = torch.eye(self.channels, device=images.device, dtype=images.dtype) + self.matrix
        return torch.einsum("ck,nkhw->nchw", matrix, images) + bias
