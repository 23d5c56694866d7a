"""Guards against non-finite numbers: no NaN or infinity is ever trained on, aggregated or reported."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from fedcl.errors import FedclError


class NonFiniteError(FedclError):
    """A loss, a model or a file that holds NaN or infinite values."""


def first_non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"NaN values in '<key>'"`` (or infinite) for the first floating tensor that is not finite, else None."""
    for key, value in state.items():
        if value.is_floating_point() or value.is_complex():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                kind = "NaN" if bool(torch.isnan(value).any()) else "infinite"
                return f"{kind} values in '{key}'"
    return None


def finite_loss(loss: torch.Tensor, task_id: int) -> float:
    """The loss as a number; a NaN or infinite loss stops training with one clear error."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteError(f"training loss became {value} in task {task_id} (learning rate too large, "
                             "or non-finite inputs or weights?); lower train.lr / train.head_lr")
    return value


def _non_finite_settings(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            found += _non_finite_settings(value, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            found.append(f"{prefix}{key}={value}")
    return found


def check_global_state(state: Mapping[str, torch.Tensor], server_round: int, config: Mapping[str, Any]) -> None:
    """Stop the run (one line naming the round and the cause) when the aggregated global model is not finite."""
    bad = first_non_finite(state)
    if bad is None:
        return
    suspects = _non_finite_settings(config)
    cause = (f"non-finite settings: {', '.join(suspects[:3])}" if suspects else
             "the server or client learning rates (federation.server_lr, train.lr) may be too large")
    raise NonFiniteError(f"the global model became non-finite in round {server_round} ({bad}) after aggregation; "
                         f"likely cause: {cause}. No results were written")
