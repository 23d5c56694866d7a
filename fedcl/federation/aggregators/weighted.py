"""Class-/task-aware FedAvg: each row's mean weighted by the samples each client trained it on."""

from __future__ import annotations

import torch

from fedcl.federation.aggregators.registry import AGGREGATORS


@AGGREGATORS.register("weighted")
def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (weights * values).sum(0) / weights.sum(0)
