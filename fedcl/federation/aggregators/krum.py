"""Krum (Blanchard et al., 2017): the one client update closest to its n - f - 2 nearest others."""

from __future__ import annotations

import torch

from fedcl.federation.aggregators.registry import AGGREGATORS


@AGGREGATORS.register("krum")
def krum(values: torch.Tensor, weights: torch.Tensor, byzantine: int = 1) -> torch.Tensor:
    """Chosen among the clients that trained these rows; with two or fewer, their mean."""
    n = values.shape[0]
    if n <= 2:
        return values.mean(dim=0)
    flat = values.reshape(n, -1)
    dist = torch.cdist(flat, flat).pow(2)
    closest = max(1, n - byzantine - 2)
    scores = [float(dist[i][torch.arange(n) != i].sort().values[:closest].sum()) for i in range(n)]
    return values[min(range(n), key=scores.__getitem__)]
