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


ROBUST = ("median", "trimmed_mean", "krum")


def averaged_float_keys(global_state: dict[str, torch.Tensor], kinds: dict[str, str]) -> list[str]:
    """The float parts that are averaged (sufficient statistics and integer buffers excluded)."""
    return [k for k, g in global_state.items() if g.is_floating_point() and kinds.get(k) != "sum"]


def update_norm(state: dict[str, torch.Tensor], global_state: dict[str, torch.Tensor], kinds: dict[str, str]) -> float:
    """L2 norm of a client's change to the float, averaged parts of the state."""
    total = 0.0
    for key in averaged_float_keys(global_state, kinds):
        total += float((state[key].double() - global_state[key].double()).pow(2).sum())
    return total**0.5


def clip_update(state: dict[str, torch.Tensor], global_state: dict[str, torch.Tensor], kinds: dict[str, str],
                clipping_norm: float) -> dict[str, torch.Tensor]:
    """The client's state with its change to the averaged float parts clipped to ``clipping_norm`` (Flower's
    ``compute_clip_model_update``: FlatClip of the whole update)."""
    from flwr.supercore.differential_privacy import compute_clip_model_update

    keys = averaged_float_keys(global_state, kinds)
    new = [state[k].double().numpy().copy() for k in keys]
    compute_clip_model_update(new, [global_state[k].double().numpy() for k in keys], clipping_norm)
    return {**state, **{k: torch.from_numpy(v).to(global_state[k].dtype) for k, v in zip(keys, new)}}


def _krum_choice(updates: list[ClientUpdate], keys: list[str], byzantine: int) -> int:
    """Index of the update with the smallest summed squared distance to its n - f - 2 nearest others."""
    flat = torch.stack([torch.cat([u.state[k].double().flatten() for k in keys]) for u in updates])
    dist = torch.cdist(flat, flat).pow(2)
    closest = max(1, len(updates) - byzantine - 2)
    scores = [float(dist[i][torch.arange(len(updates)) != i].sort().values[:closest].sum()) for i in range(len(updates))]
    return min(range(len(updates)), key=scores.__getitem__)


def robust_aggregate(global_state: dict[str, torch.Tensor], updates: list[ClientUpdate], kinds: dict[str, str],
                     method: str, trim_fraction: float = 0.2, byzantine: int = 1) -> dict[str, torch.Tensor]:
    """Coordinate-wise median, trimmed mean, or Krum of the float, averaged parts; sufficient statistics
    ('sum' kinds, e.g. NCM) and integer buffers are still combined by :func:`aggregate`."""
    out = aggregate(global_state, updates, kinds)
    keys = averaged_float_keys(global_state, kinds)
    if not updates or not keys:
        return out
    if method == "krum":
        chosen = updates[_krum_choice(updates, keys, byzantine)]
        return {**out, **{k: chosen.state[k].to(global_state[k].dtype).clone() for k in keys}}
    for key in keys:
        stacked = torch.stack([u.state[key].double() for u in updates])
        if method == "median":
            value = stacked.median(dim=0).values
        else:
            cut = int(trim_fraction * len(updates))
            ordered = stacked.sort(dim=0).values
            value = ordered[cut : len(updates) - cut].mean(dim=0)
        out[key] = value.to(global_state[key].dtype)
    return out
