"""Single linear head over all classes (class-incremental); the learner masks unseen classes."""

from __future__ import annotations

import torch
from torch import nn

from fedcl.heads.base import HEADS, Head


@HEADS.register("linear")
class LinearHead(Head):
    def __init__(self, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None) -> None:
        super().__init__(feature_dim, num_classes, task_classes)
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(features)

    def aggregation_kinds(self) -> dict[str, str]:
        return {"fc.weight": "class_rows", "fc.bias": "class_rows"}
