"""Head registry: ``create_head(name, feature_dim, num_classes, task_classes)``."""

from __future__ import annotations

from typing import Any

from fedcl.errors import ConfigError
from fedcl.heads.base import HEADS, Head


def create_head(
    name: str, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None, **kwargs: Any
) -> Head:
    cls = HEADS.get(name)
    try:
        return cls(feature_dim, num_classes, task_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model.head '{name}': {exc}") from None


def head_names() -> list[str]:
    return HEADS.names()


from fedcl.heads import cosine, lda, linear, multi_head, ncm, ridge  # noqa: E402,F401

__all__ = ["HEADS", "Head", "create_head", "head_names"]
