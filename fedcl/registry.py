"""A tiny name -> factory registry, one per component family (timm style)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from fedcl.errors import ConfigError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Maps names to factories; ``get`` fails with a one-line error naming the choices."""

    def __init__(self, family: str, key: str | None = None) -> None:
        self.family = family
        #: the config key that names an entry (errors start with it)
        self.key = key
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def decorator(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.family} '{name}' is registered twice")
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> F:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._entries, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        choices = ", ".join(n + "<model>" if n.endswith(":") else n for n in self.names())
        prefix = f"{self.key}: " if self.key else ""
        return f"{prefix}unknown {self.family} {_short(name)}{hint}; choose from: {choices}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def _short(name: object) -> str:
    text = repr(name) if isinstance(name, str) else repr(str(name))
    return text if len(text) <= 60 else text[:57] + "..."
