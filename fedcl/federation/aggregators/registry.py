"""The aggregator registry (apart from the package, so that aggregators never import the package)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedcl.registry import Registry

AGGREGATORS: Registry[Callable[..., torch.Tensor]] = Registry("aggregator")
