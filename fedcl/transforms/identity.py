"""No transformation: the input reaches the backbone unchanged (head-only, fine-tuning)."""

from __future__ import annotations

import torch

from fedcl.transforms.base import TRANSFORMS, InputTransform


@TRANSFORMS.register("none")
class IdentityTransform(InputTransform):
    def apply_transform(self, images: torch.Tensor) -> torch.Tensor:
        return images
