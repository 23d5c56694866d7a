"""Where config values come from: presets, TOML/JSON files and ``key=value`` overrides.

Every reader returns plain nested dicts and fails with one line: files that are missing,
too large, unparsable, nested too deeply or (JSON) with duplicate keys.
"""

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from fedcl.errors import ConfigError

#: largest config file, in bytes
MAX_FILE_BYTES = 1 << 20
#: deepest nesting of tables and lists in a config
MAX_DEPTH = 32


def depth(value: Any) -> int:
    """How deeply ``value``'s dicts and lists nest (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


class _DuplicateKey(Exception):
    """A JSON object that names a key twice."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _parse(path: Path, text: str) -> Any:
    if path.suffix == ".json":
        return json.loads(text, object_pairs_hook=_refuse_duplicates)
    return tomllib.loads(text)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML or JSON (``.json``) config file, or the config inside a results.json."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" if not path.exists() else f"config file {path} is not a file")
    if (size := path.stat().st_size) > MAX_FILE_BYTES:
        raise ConfigError(f"config file {path} is {size} bytes; a config is at most {MAX_FILE_BYTES} bytes")
    try:
        data = _parse(path, path.read_text(encoding="utf-8"))
    except _DuplicateKey as exc:
        raise ConfigError(f"config file {path} names the key {str(exc)[:60]!r} twice in one table") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests tables or lists more than {MAX_DEPTH} levels deep") from None
    except (ValueError, OSError) as exc:  # decode errors, bad syntax, integers of thousands of digits
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table")
    if depth(data) > MAX_DEPTH:
        raise ConfigError(f"config file {path} nests tables or lists more than {MAX_DEPTH} levels deep")
    # A results.json embeds its config: accept it directly to re-run a result.
    return data["config"] if isinstance(data.get("config"), dict) and "accuracy_matrix" in data else data


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (numbers, true/false, [lists], "strings"); bare words are strings, null is None."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text[:60]!r} is not key=value")
    if key.count(".") >= MAX_DEPTH:
        raise ConfigError(f"override key {key[:60]!r}... nests more than {MAX_DEPTH} levels deep")
    raw = raw.strip()
    if raw == "null":
        return key, None
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw
    except RecursionError:
        raise ConfigError(f"override {key}: the value nests more than {MAX_DEPTH} levels deep") from None
    except ValueError:  # an integer of thousands of digits
        raise ConfigError(f"override {key}: cannot read the value {raw[:30]!r}...") from None
    if depth(value) > MAX_DEPTH:
        raise ConfigError(f"override {key}: the value nests more than {MAX_DEPTH} levels deep")
    return key, value


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}' conflicts with another override")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: tables merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("fedcl.presets").iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name[:60]!r}; choose from: {', '.join(preset_names())}")
    return tomllib.loads(resources.files("fedcl.presets").joinpath(f"{name}.toml").read_text())
