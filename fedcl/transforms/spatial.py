"""Spatial transform: a learned affine warp of the sampling grid (6 parameters), identity at start."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.transforms.base import TRANSFORMS, InputTransform


@TRANSFORMS.register("spatial")
class SpatialAffine(InputTransform):
    def __init__(self, image_size: int, channels: int = 3) -> None:
        super().__init__(image_size, channels)
        self.theta = nn.Parameter(torch.zeros(2, 3))
        self.register_buffer("identity", torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), persistent=False)

    def apply_transform(self, images: torch.Tensor) -> torch.Tensor:
        theta = (self.identity + self.theta).unsqueeze(0).expand(images.shape[0], 2, 3)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
