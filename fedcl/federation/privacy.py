"""Central differential privacy on the exchanged parameters: Gaussian noise after clipped averaging.

The noise scale is Flower's (``compute_stdv``: multiplier x clipping norm / sampled
clients); the noise is drawn from a generator seeded by (seed, round), so a run is
reproducible and a resumed run draws the same noise.
"""

from __future__ import annotations

import hashlib

import torch
from flwr.supercore.differential_privacy import compute_stdv

from fedcl.federation.aggregation import averaged_float_keys


def noise_std(noise_multiplier: float, clipping_norm: float, sampled_clients: int) -> float:
    return compute_stdv(noise_multiplier, clipping_norm, max(1, sampled_clients)) if noise_multiplier > 0 else 0.0


def add_noise(state: dict[str, torch.Tensor], kinds: dict[str, str], std: float, seed: str) -> dict[str, torch.Tensor]:
    """``state`` with N(0, std^2) added to every averaged float parameter."""
    if std == 0:
        return state
    generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little") >> 1)
    out = dict(state)
    for key in averaged_float_keys(state, kinds):
        noise = torch.randn(state[key].shape, generator=generator, dtype=torch.float64) * std
        out[key] = (state[key].double() + noise).to(state[key].dtype)
    return out
