"""Registry of pure aggregators: ``create_aggregator(name, **options)``, ``aggregator_names()``.

An aggregator combines one *part* of the model (a group of class rows, a per-task part, or a
shared parameter) over the clients that trained it::

    fn(values, weights) -> combined
    values:  float64 [clients, rows, elements]   (only clients that contributed to these rows)
    weights: float64 [clients, rows, 1]          (each client's sample count for each row, > 0)
    combined: float64 [rows, elements]

Which clients contributed to which rows, and the global value where nobody did, are decided by
:func:`fedcl.federation.aggregation.combine`; sums of sufficient statistics by
:func:`fedcl.federation.aggregation.add_changes`. Adding an aggregator is one file + one
``@AGGREGATORS.register`` line here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from fedcl.errors import ConfigError
from fedcl.federation.aggregators.registry import AGGREGATORS

Aggregator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def create_aggregator(name: str, **options: Any) -> Aggregator:
    """The aggregator ``name`` with its options bound (options it does not take are dropped)."""
    fn = AGGREGATORS.get(name)
    accepted = set(inspect.signature(fn).parameters) - {"values", "weights"}
    return functools.partial(fn, **{k: v for k, v in options.items() if k in accepted})


def aggregator_names() -> list[str]:
    return AGGREGATORS.names()


def check_aggregator(name: str) -> None:
    """``federation.aggregation`` must be a registered aggregator (one-line ConfigError naming the choices)."""
    if name not in AGGREGATORS:
        raise ConfigError(f"federation.aggregation must be one of {', '.join(aggregator_names())}: got {name!r}")


from fedcl.federation.aggregators import krum, median, trimmed_mean, weighted  # noqa: E402,F401

__all__ = ["AGGREGATORS", "Aggregator", "aggregator_names", "check_aggregator", "create_aggregator"]
