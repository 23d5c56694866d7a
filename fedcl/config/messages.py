"""pydantic's validation errors as one line naming the dotted key and what it expects."""

import difflib
import re
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from fedcl.config.values import Meaning
from fedcl.errors import ConfigError

#: keys that were renamed: old dotted key -> new dotted key
RENAMED = {"model.checkpoint": "model.weights"}

_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list",
    "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table",
}
_KEY_PART = re.compile(r"[A-Za-z0-9_]{1,40}")


def show(value: Any, limit: int = 60) -> str:
    """A value as a short one-line repr."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dotted(loc: tuple[str | int, ...]) -> str:
    """('data', 'class_order', 1) -> data.class_order[1]; odd key names are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _KEY_PART.fullmatch(part) else show(part, 40)
            out += f".{name}" if out else name
    return out


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def annotation_at(schema: type[BaseModel], loc: tuple[str | int, ...]) -> Any:
    """The declared type at ``loc`` in ``schema`` (Annotated metadata kept), or None."""
    annotation: Any = schema
    for part in loc:
        annotation = _unwrap(annotation)
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = _unwrap(typing.get_args(annotation)[0])
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and part in annotation.model_fields:
            field = annotation.model_fields[part]
            annotation = typing.Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        elif origin is list and isinstance(part, int):
            annotation = args[0]
        elif origin is dict and isinstance(part, str):
            annotation = args[1]
        else:
            return None
    return annotation


def meaning_of(annotation: Any) -> str | None:
    """What a value of ``annotation`` must be, in words."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        found = [m.text for m in metadata if isinstance(m, Meaning)]
        return found[0] if found else meaning_of(inner)
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(annotation)))
    return None


def unknown_key(schema: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    key = dotted(loc)
    if key in RENAMED:
        return f"config key '{key}' is now '{RENAMED[key]}'"
    parent = _unwrap(annotation_at(schema, loc[:-1]))
    names = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    prefix = dotted(loc[:-1]) + "." if len(loc) > 1 else ""
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"unknown config key '{key}'{hint}"


def config_error(exc: ValidationError, schema: type[BaseModel]) -> ConfigError:
    """The first problem of ``exc`` as a one-line :class:`ConfigError`."""
    error = exc.errors(include_url=False)[0]
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    key = dotted(loc) or "the config"
    if kind == "extra_forbidden":
        return ConfigError(unknown_key(schema, loc))
    if kind in _EXPECTED:
        return ConfigError(f"{key}: expected {_EXPECTED[kind]}, got {show(value)}")
    if kind == "too_short":
        return ConfigError(f"{key} must not be empty")
    meaning = meaning_of(annotation_at(schema, loc))
    if meaning:
        return ConfigError(f"{key} must be {meaning}: got {show(value)}")
    return ConfigError(f"{key}: {error['msg']}, got {show(value)}")
