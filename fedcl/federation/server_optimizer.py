"""Server optimisers: a wrapper that turns the combined state into a step on the global state."""

from __future__ import annotations

import torch


class ServerAdam:
    """FedAdam (Reddi et al., 2021) on the pseudo-gradient combined - global.

    It steps only where some client contributed (``touched``): elsewhere the global value and
    the moments are kept, so rows and per-task parts nobody trained this round do not drift.
    """

    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-9) -> None:
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self.steps = 0
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def step(self, global_state: dict[str, torch.Tensor], combined: dict[str, torch.Tensor], kinds: dict[str, str],
             touched: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        self.steps += 1
        # bias-corrected step size, as in Flower's FedAdam
        lr = self.lr * (1 - self.beta2**self.steps) ** 0.5 / (1 - self.beta1**self.steps)
        out = {}
        for key, g in global_state.items():
            if not g.is_floating_point() or kinds.get(key) == "sum":
                out[key] = combined[key]
                continue
            where = touched[key] if touched is not None and key in touched else torch.ones_like(g, dtype=torch.bool)
            delta = combined[key] - g
            m_old, v_old = self.m.get(key, torch.zeros_like(g)), self.v.get(key, torch.zeros_like(g))
            m = torch.where(where, self.beta1 * m_old + (1 - self.beta1) * delta, m_old)
            v = torch.where(where, self.beta2 * v_old + (1 - self.beta2) * delta * delta, v_old)
            self.m[key], self.v[key] = m, v
            out[key] = torch.where(where, g + lr * m / (v.sqrt() + self.tau), g)
        return out
