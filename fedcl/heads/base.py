"""Base class for classification heads on top of frozen-backbone features."""

from __future__ import annotations

import torch
from torch import nn

from fedcl.registry import Registry


class Head(nn.Module):
    """Maps features (N, D) to logits over all ``num_classes`` global classes.

    ``task_classes[t]`` lists the global classes of task t (needed by multi-head).
    Statistical heads (NCM, LDA, ridge; ``gathers_statistics``) learn in :meth:`observe`
    from summed statistics: when nothing else trains, the learner shows each training
    sample to them once (:meth:`fedcl.learner.Learner.gather_statistics`).
    """

    #: True -> the head is a function of summed statistics (:mod:`fedcl.heads.statistics`)
    gathers_statistics = False
    #: True when logits depend on the task id (multi-head): distillation then goes task by task
    uses_task_ids = False

    def __init__(self, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.task_classes = task_classes or [list(range(num_classes))]

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def observe(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Update non-gradient state from a training batch (no-op by default)."""

    def aggregation_kinds(self) -> dict[str, str]:
        """How a federated server combines each state key.

        'examples': average weighted by examples; 'class_rows': row c averaged over the
        clients' examples of class c; 'task:<t>': averaged over clients that trained task t;
        'sum': the global value plus the sum of the clients' changes (sufficient statistics).
        """
        return {k: "examples" for k in self.state_dict()}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

HEADS: Registry[type[Head]] = Registry("head", key="model.head.name")
