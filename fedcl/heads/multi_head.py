"""Multi-head (task-incremental): one linear classifier per task over that task's classes."""

from __future__ import annotations

import torch
from torch import nn

from fedcl.heads.base import HEADS, Head


@HEADS.register("multi_head")
class MultiHead(Head):
    """Logits of classes outside the sample's task are -inf; task ids are required."""

    uses_task_ids = True

    def __init__(self, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None) -> None:
        super().__init__(feature_dim, num_classes, task_classes)
        self.heads = nn.ModuleList([nn.Linear(feature_dim, len(c)) for c in self.task_classes])
        for t, classes in enumerate(self.task_classes):
            self.register_buffer(f"classes_{t}", torch.tensor(classes, dtype=torch.long), persistent=False)

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        if task_ids is None:
            raise ValueError("multi_head needs task ids: use it with the task-incremental scenario")
        task_ids = task_ids.to(features.device)
        logits = features.new_full((features.shape[0], self.num_classes), float("-inf"))
        for t in task_ids.unique().tolist():
            rows = (task_ids == t).nonzero(as_tuple=True)[0]
            cols = getattr(self, f"classes_{t}")
            logits[rows.unsqueeze(1), cols.unsqueeze(0)] = self.heads[t](features[rows])
        return logits

    def aggregation_kinds(self) -> dict[str, str]:
        return {k: f"task:{k.split('.')[1]}" for k in self.state_dict()}
