"""Method registry: ``create_method(name, **options)``."""

from __future__ import annotations

from typing import Any

from fedcl.errors import ConfigError
from fedcl.methods.base import Method
from fedcl.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


def create_method(name: str, **options: Any) -> Method:
    cls = METHODS.get(name)
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method '{name}': {exc}") from None


def method_names() -> list[str]:
    return METHODS.names()


from fedcl.methods import finetune, head_only, input_tuning  # noqa: E402,F401

__all__ = ["METHODS", "Method", "create_method", "method_names"]
