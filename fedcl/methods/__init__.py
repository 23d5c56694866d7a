"""Method and plugin registries: ``create_method(name, **options)``, ``create_plugin(name, **options)``.

Methods choose what trains (input_tuning, head_only, finetune, partial_finetune);
plugins add a continual-learning mechanism to any method (ewc, lwf, replay,
proximal, joint). In a config::

    [method]
    name = "input_tuning"
    [method.plugins.ewc]
    strength = 100.0
"""

from __future__ import annotations

import inspect
from typing import Any

from fedcl.errors import ConfigError
from fedcl.methods.base import METHODS, PLUGINS, Batch, Method, Plugin
from fedcl.registry import Registry


def _create(registry: Registry, kind: str, name: str, options: dict[str, Any]) -> Any:
    cls = registry.get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self" and p != "options"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"{kind} '{name}': unknown option(s) {', '.join(unknown)}; it accepts: {', '.join(accepted) or 'no options'}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} '{name}': {exc}") from None


def create_method(name: str, **options: Any) -> Method:
    return _create(METHODS, "method", name, options)


def create_plugin(name: str, **options: Any) -> Plugin:
    return _create(PLUGINS, "plugin", name, options)


def method_names() -> list[str]:
    return METHODS.names()


def plugin_names() -> list[str]:
    return PLUGINS.names()


from fedcl.methods import ewc, finetune, head_only, input_tuning, joint, lwf, proximal, replay  # noqa: E402,F401

__all__ = ["METHODS", "PLUGINS", "Batch", "Method", "Plugin", "create_method", "create_plugin", "method_names", "plugin_names"]
