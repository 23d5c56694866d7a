"""Server-side aggregation of client updates (pure functions, tested by hand).

Only the exchanged (lightweight) state is aggregated. Each key has a kind
(:meth:`ContinualModel.aggregation_kinds`): class-aware rows for heads, per-task
weights for per-task parts, sums for sufficient statistics, examples otherwise.
Where no client contributed (weight 0), the global value is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ClientUpdate:
    state: dict[str, torch.Tensor]
    num_examples: int
    class_counts: list[int]
    task_examples: list[int]


def _weights(kind: str, update: ClientUpdate, shape: torch.Size) -> torch.Tensor:
    if kind == "class_rows":
        w = torch.tensor(update.class_counts, dtype=torch.float64)
        return w.view(-1, *([1] * (len(shape) - 1)))
    if kind.startswith("task:"):
        return torch.tensor(float(update.task_examples[int(kind[5:])]), dtype=torch.float64)
    return torch.tensor(float(update.num_examples), dtype=torch.float64)


def aggregate(global_state: dict[str, torch.Tensor], updates: list[ClientUpdate], kinds: dict[str, str]) -> dict[str, torch.Tensor]:
    """Weighted averages (or sums of changes) of the clients' states, key by key."""
    if not updates:
        return {k: v.clone() for k, v in global_state.items()}
    out = {}
    for key, current in global_state.items():
        kind = kinds.get(key, "examples")
        g = current.double()
        if kind == "sum":
            out[key] = (g + sum(u.state[key].double() - g for u in updates)).to(current.dtype)
            continue
        num = torch.zeros_like(g)
        den = None
        for u in updates:
            w = _weights(kind, u, current.shape)
            num = num + w * u.state[key].double()
            den = w if den is None else den + w
        den = den.expand_as(g) if den.dim() else den.expand(g.shape)
        avg = torch.where(den > 0, num / den.clamp(min=1e-12), g)
        out[key] = avg.to(current.dtype)
    return out


class ServerAdam:
    """FedAdam-style server optimiser (Reddi et al., 2021) on the pseudo-gradient avg - global."""

    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-9) -> None:
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self.steps = 0
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def step(self, global_state: dict[str, torch.Tensor], averaged: dict[str, torch.Tensor], kinds: dict[str, str]) -> dict[str, torch.Tensor]:
        self.steps += 1
        # bias-corrected step size, as in Flower's FedAdam
        lr = self.lr * (1 - self.beta2**self.steps) ** 0.5 / (1 - self.beta1**self.steps)
        out = {}
        for key, g in global_state.items():
            if not g.is_floating_point() or kinds.get(key) == "sum":
                out[key] = averaged[key]
                continue
            delta = averaged[key] - g
            m = self.beta1 * self.m.get(key, torch.zeros_like(g)) + (1 - self.beta1) * delta
            v = self.beta2 * self.v.get(key, torch.zeros_like(g)) + (1 - self.beta2) * delta * delta
            self.m[key], self.v[key] = m, v
            out[key] = g + lr * m / (v.sqrt() + self.tau)
        return out
