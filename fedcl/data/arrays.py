"""In-memory image arrays: the decoded form every dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageArrays:
    """uint8 images (N, C, H, W) and integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> ImageArrays:
        return ImageArrays(self.images[index], self.labels[index])


@dataclass
class DatasetSplits:
    name: str
    train: ImageArrays
    test: ImageArrays
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
