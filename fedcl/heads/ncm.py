"""Nearest-class-mean head: no gradient; class feature sums and counts are its whole state."""

from __future__ import annotations

import torch

from fedcl.heads import HEADS
from fedcl.heads.base import Head


@HEADS.register("ncm")
class NearestClassMean(Head):
    """Logit of class c is -||f - mean_c||^2; classes never observed get -inf.

    Sums and counts (not means) are kept so that the server can aggregate them exactly.
    """

    learns_by_gradient = False

    def __init__(self, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None) -> None:
        super().__init__(feature_dim, num_classes, task_classes)
        self.register_buffer("sums", torch.zeros(num_classes, feature_dim, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.float64))

    @torch.no_grad()
    def observe(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.sums.index_add_(0, labels.to(self.sums.device), features.detach().to(self.sums))
        self.counts.index_add_(0, labels.to(self.counts.device), torch.ones_like(labels, dtype=self.counts.dtype, device=self.counts.device))

    def aggregation_kinds(self) -> dict[str, str]:
        return {"sums": "sum", "counts": "sum"}

    def means(self) -> torch.Tensor:
        return (self.sums / self.counts.clamp(min=1).unsqueeze(1)).to(torch.float32)

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        logits = -torch.cdist(features.float(), self.means().to(features.device)).pow(2)
        return logits.masked_fill((self.counts == 0).to(features.device).unsqueeze(0), float("-inf"))
