"""A small residual convolutional network: x + conv(relu(conv(x))), last conv zero-initialised."""

from __future__ import annotations

import torch
from torch import nn

from fedcl.transforms.base import TRANSFORMS, InputTransform


@TRANSFORMS.register("residual_conv")
class ResidualConv(InputTransform):
    def __init__(self, image_size: int, channels: int = 3, hidden: int = 8, kernel_size: int = 3, depth: int = 2) -> None:
        super().__init__(image_size, channels)
        if depth < 2:
            raise ValueError("residual_conv depth must be at least 2")
        pad = kernel_size // 2
        layers: list[nn.Module] = [nn.Conv2d(channels, hidden, kernel_size, padding=pad), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(hidden, hidden, kernel_size, padding=pad), nn.ReLU()]
        last = nn.Conv2d(hidden, channels, kernel_size, padding=pad)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def apply_transform(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.net(images)
