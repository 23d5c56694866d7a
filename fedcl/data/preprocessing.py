"""Batch conversion of stored uint8 images into what a backbone expects."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_model_input(images: torch.Tensor, image_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, 3, S, S) in [0, 1]: grey replicated to RGB, resized.

    Done per batch on the target device, so decoded datasets stay small in memory.
    Normalisation belongs to the backbone (it runs after the learned input transform).
    """
    x = images.to(device=device, non_blocking=True).float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]}")
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()
