"""Nearest-class-mean head: no gradient; class feature sums and counts are its whole state."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedcl.heads.base import HEADS
from fedcl.heads.statistics import StatisticalHead

METRICS = ("euclidean", "cosine")


@HEADS.register("ncm")
class NearestClassMean(StatisticalHead):
    """Class means mu_c = sums_c / counts_c; classes never observed get -inf.

    ``metric="euclidean"``: logit -||f - mu_c||^2 (computed as 2 f.mu_c - ||mu_c||^2, which
    differs by the per-sample constant ||f||^2: same argmax and softmax).
    ``metric="cosine"``: logit cos(f, mu_c), the prototype classifier of SimpleCIL.
    Sums and counts (not means) are kept so that the server can aggregate them exactly.
    """

    def __init__(self, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None,
                 metric: str = "euclidean") -> None:
        if metric not in METRICS:
            raise TypeError(f"metric must be one of {', '.join(METRICS)}: got {metric!r}")
        super().__init__(feature_dim, num_classes, task_classes)
        self.metric = metric

    def means(self) -> torch.Tensor:
        return (self.sums / self.counts.clamp(min=1).unsqueeze(1)).to(torch.float32)

    def solve(self) -> tuple[torch.Tensor, torch.Tensor]:
        seen = self.seen()
        mu = self.sums[seen] / self.counts[seen].unsqueeze(1)
        if self.metric == "cosine":
            return F.normalize(mu, dim=1), mu.new_zeros(len(mu))
        return 2 * mu, -(mu * mu).sum(1)

    def scores(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.metric == "cosine":
            h = F.normalize(h, dim=1)
        return super().scores(h, weight, bias)
