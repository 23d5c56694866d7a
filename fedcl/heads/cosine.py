"""Cosine-similarity head: scaled cosine between L2-normalised features and class weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedcl.heads.base import HEADS, Head


@HEADS.register("cosine")
class CosineHead(Head):
    def __init__(
        self, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None, scale: float = 16.0
    ) -> None:
        super().__init__(feature_dim, num_classes, task_classes)
        self.weight = nn.Parameter(torch.randn(num_classes, feature_dim) * 0.01)
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log())

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.log_scale.exp() * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))

    def aggregation_kinds(self) -> dict[str, str]:
        return {"weight": "class_rows", "log_scale": "examples"}
