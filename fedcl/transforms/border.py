"""Padding/border prompt: a learned frame of width ``width`` added around the image."""

from __future__ import annotations

import torch
from torch import nn

from fedcl.transforms.base import TRANSFORMS, InputTransform


@TRANSFORMS.register("border")
class BorderPrompt(InputTransform):
    """Only the frame is learned: top/bottom strips (width x S) and left/right strips."""

    def __init__(self, image_size: int, channels: int = 3, width: int = 4) -> None:
        super().__init__(image_size, channels)
        if not 0 < 2 * width < image_size:
            raise ValueError(f"border width {width} must be positive and less than half of image_size {image_size}")
        self.width = width
        inner = image_size - 2 * width
        self.top = nn.Parameter(torch.zeros(1, channels, width, image_size))
        self.bottom = nn.Parameter(torch.zeros(1, channels, width, image_size))
        self.left = nn.Parameter(torch.zeros(1, channels, inner, width))
        self.right = nn.Parameter(torch.zeros(1, channels, inner, width))
        self.register_buffer("center", torch.zeros(1, channels, inner, inner), persistent=False)

    def prompt(self) -> torch.Tensor:
        middle = torch.cat([self.left, self.center, self.right], dim=3)
        return torch.cat([self.top, middle, self.bottom], dim=2)

    def apply_transform(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.prompt()
