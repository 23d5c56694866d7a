"""Input-transformation registry: ``create_transform(name, image_size, ...)``."""

from __future__ import annotations

from typing import Any

from fedcl.errors import ConfigError
from fedcl.transforms.base import TRANSFORMS, InputTransform, PerTaskTransform


def create_transform(
    name: str, image_size: int, *, per_task: bool = False, num_tasks: int = 1, **kwargs: Any
) -> InputTransform:
    """Build a transform; ``per_task`` keeps an independent copy for each of ``num_tasks`` tasks."""
    cls = TRANSFORMS.get(name)

    def build() -> InputTransform:
        try:
            return cls(image_size, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.transform '{name}': {exc}") from None

    if per_task and name != "none":
        return PerTaskTransform(build, num_tasks)
    return build()


def transform_names() -> list[str]:
    return TRANSFORMS.names()


from fedcl.transforms import additive, border, color_affine, identity, residual_conv, spatial  # noqa: E402,F401

__all__ = ["TRANSFORMS", "InputTransform", "PerTaskTransform", "create_transform", "transform_names"]
