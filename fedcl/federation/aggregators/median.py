"""Coordinate-wise median over the clients that trained the rows (unweighted; robust to outliers)."""

from __future__ import annotations

import torch

from fedcl.federation.aggregators.registry import AGGREGATORS


@AGGREGATORS.register("median")
def median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return values.median(dim=0).values
