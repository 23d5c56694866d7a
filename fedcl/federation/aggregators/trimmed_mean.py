"""Coordinate-wise trimmed mean: drop the ``trim_fraction`` largest and smallest values, average the rest."""

from __future__ import annotations

import torch

from fedcl.federation.aggregators.registry import AGGREGATORS


@AGGREGATORS.register("trimmed_mean")
def trimmed_mean(values: torch.Tensor, weights: torch.Tensor, trim_fraction: float = 0.2) -> torch.Tensor:
    n = values.shape[0]
    cut = int(trim_fraction * n)
    return values.sort(dim=0).values[cut : n - cut].mean(dim=0)
