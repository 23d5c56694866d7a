"""Combining client updates, part by part, over the clients that trained each part (pure functions).

Only the exchanged (lightweight) state is aggregated. Each key has a kind
(:meth:`ContinualModel.aggregation_kinds`):

- ``class_rows``: row c is combined over the clients that trained class c (with weight = the
  samples of class c in their loss, replayed and distilled ones included);
- ``task:k``: combined over the clients that trained task k (weight = its samples);
- ``examples``: combined over every client that trained (weight = its samples);
- ``sum``: sufficient statistics; the global value plus the sum of the clients' changes. A reply may
  omit a 'sum' key: it has no new statistics (zero change). A packed Gram change may come as a low-rank
  factor R instead (``ClientUpdate.factors``; the change is RᵀR, :mod:`fedcl.federation.factors`).

Where no client contributed, the global value is kept; :class:`Combined` says where that was
(``touched``), so that a server optimiser moves only what was trained. The aggregator for a part
(weighted mean, median, trimmed mean, Krum) comes from :mod:`fedcl.federation.aggregators`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from fedcl.federation.aggregators import Aggregator, create_aggregator
from fedcl.federation.factors import factor_gram


@dataclass
class ClientUpdate:
    state: dict[str, torch.Tensor]
    num_examples: int
    class_counts: list[int]
    task_examples: list[int]
    #: 'sum' keys whose change came as a factor R (the change is pack(RᵀR)); such a key is not in ``state``
    factors: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Combined:
    """The new global state and, per averaged key, a bool mask of the elements some client trained."""

    state: dict[str, torch.Tensor]
    touched: dict[str, torch.Tensor]


def _row_weights(kind: str, update: ClientUpdate, rows: int) -> torch.Tensor:
    """The client's weight for each row of a key ([rows]; one row unless ``class_rows``)."""
    if kind == "class_rows":
        return torch.tensor(update.class_counts, dtype=torch.float64)
    if kind.startswith("task:"):
        task = int(kind[5:])
        return torch.tensor([float(update.task_examples[task]) if task < len(update.task_examples) else 0.0], dtype=torch.float64)
    return torch.full((rows,), float(update.num_examples), dtype=torch.float64)


def _as_rows(t: torch.Tensor, kind: str) -> torch.Tensor:
    """[rows, elements]: class rows keep their first dimension, anything else is one row."""
    t = t.double()
    return t.reshape(t.shape[0], -1) if kind == "class_rows" and t.dim() > 0 else t.reshape(1, -1)


def combine_key(current: torch.Tensor, values: list[torch.Tensor], weights: torch.Tensor, kind: str,
                aggregator: Aggregator) -> tuple[torch.Tensor, torch.Tensor]:
    """One key: each group of rows trained by the same clients goes through ``aggregator`` together.
    ``weights``: [clients, rows]. Returns (new value, bool mask of touched elements)."""
    g = _as_rows(current, kind)
    out = g.clone()
    touched = torch.zeros(g.shape[0], dtype=torch.bool)
    if values:
        stacked = torch.stack([_as_rows(v, kind) for v in values])
        contributed = weights > 0
        for pattern in torch.unique(contributed.T, dim=0):
            if not pattern.any():
                continue
            rows = (contributed.T == pattern).all(dim=1).nonzero(as_tuple=True)[0]
            clients = pattern.nonzero(as_tuple=True)[0]
            part = stacked[clients][:, rows]
            out[rows] = aggregator(part, weights[clients][:, rows].unsqueeze(-1))
            touched[rows] = True
    mask = touched.unsqueeze(1).expand_as(g).reshape(current.shape)
    return out.reshape(current.shape).to(current.dtype), mask


def total_change(like: torch.Tensor, changes: Iterable[torch.Tensor], factors: list[torch.Tensor]) -> torch.Tensor:
    """The sum (float64) of the clients' changes of one 'sum' key: the packed ones in their order, then the
    factors' pack(RᵀR), in their order (the caller's fixed partition order: the same sums whatever the arrival)."""
    total = sum((c.double() for c in changes), torch.zeros_like(like, dtype=torch.float64))
    return total + factor_gram(factors, factors[0].shape[1]) if factors else total


def add_changes(current: torch.Tensor, key: str, updates: list[ClientUpdate]) -> torch.Tensor:
    """Sufficient statistics: global + sum over the clients of (their value - global) or of their factor's
    change; omitted = no change."""
    g = current.double()
    changes = (u.state[key].double() - g for u in updates if key in u.state)
    return (g + total_change(g, changes, [u.factors[key] for u in updates if key in u.factors])).to(current.dtype)


def combine(global_state: dict[str, torch.Tensor], updates: list[ClientUpdate], kinds: dict[str, str],
            aggregator: Aggregator | None = None) -> Combined:
    """Every key of the global state combined over the clients that trained it."""
    aggregator = aggregator or create_aggregator("weighted")
    weighted = create_aggregator("weighted")
    state, touched = {}, {}
    for key, current in global_state.items():
        kind = kinds.get(key, "examples")
        if kind == "sum":
            state[key] = add_changes(current, key, updates)
            continue
        rows = _as_rows(current, kind).shape[0]
        weights = torch.stack([_row_weights(kind, u, rows) for u in updates]) if updates else torch.zeros(0, rows)
        # integer buffers (e.g. BatchNorm's counters) are averaged; robust rules are for float parameters
        chosen = aggregator if current.is_floating_point() else weighted
        state[key], touched[key] = combine_key(current, [u.state[key] for u in updates], weights, kind, chosen)
    return Combined(state, touched)


def aggregate(global_state: dict[str, torch.Tensor], updates: list[ClientUpdate], kinds: dict[str, str]) -> dict[str, torch.Tensor]:
    """Class- and task-aware weighted averages (and sums of changes), key by key."""
    return combine(global_state, updates, kinds).state


def averaged_float_keys(global_state: dict[str, torch.Tensor], kinds: dict[str, str]) -> list[str]:
    """The float parts that are averaged (sufficient statistics and integer buffers excluded)."""
    return [k for k, g in global_state.items() if g.is_floating_point() and kinds.get(k) != "sum"]


def update_norm(state: dict[str, torch.Tensor], global_state: dict[str, torch.Tensor], kinds: dict[str, str]) -> float:
    """L2 norm of a client's change to the float, averaged parts of the state."""
    total = 0.0
    for key in averaged_float_keys(global_state, kinds):
        total += float((state[key].double() - global_state[key].double()).pow(2).sum())
    return total**0.5
