"""Run configuration: a typed schema (pydantic), TOML/JSON files, presets and ``--set key=value`` overrides.

Precedence: defaults <- preset <- config file <- overrides. Unknown keys, wrong types and
values that mean nothing (inf, a seed of 2**40, more byzantine clients than clients) fail with a
one-line :class:`~fedcl.errors.ConfigError` naming the dotted key. This package imports nothing
from the rest of fedcl but :mod:`fedcl.errors`; registered names are checked where they are built.
"""

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from fedcl.config.federation import FederationConfig, FedRunConfig, fault_schedule
from fedcl.config.machine import Machine, check_machine
from fedcl.config.messages import RENAMED, config_error
from fedcl.config.schema import (
    DEVICE_PROFILES, FAULT_KINDS, LOGIT_MASKS, PRECISIONS, SCENARIOS, DataConfig, HeadConfig, MethodConfig, ModelConfig,
    RunConfig, Section, TrainConfig, TransformConfig,
)
from fedcl.config.sources import merge, nest, parse_override, preset_names, read_config_file, read_preset
from fedcl.errors import ConfigError

__all__ = [
    "DEVICE_PROFILES", "FAULT_KINDS", "LOGIT_MASKS", "PRECISIONS", "SCENARIOS", "DataConfig", "FedRunConfig", "FederationConfig",
    "HeadConfig", "Machine", "MethodConfig", "ModelConfig", "RunConfig", "Section", "TrainConfig", "TransformConfig",
    "build_config", "check_machine", "config_from_dict", "fault_schedule", "nest", "parse_override", "preset_names",
    "read_config_file", "read_preset", "validate",
]


def _without_renamed_nulls(values: dict[str, Any]) -> dict[str, Any]:
    """Drop renamed keys left at null (as in an older results.json); any other value of one fails by name."""
    out = dict(values)
    for old in RENAMED:
        section, _, key = old.partition(".")
        table = out.get(section)
        if isinstance(table, dict) and key in table and table[key] is None:
            out[section] = {k: v for k, v in table.items() if k != key}
    return out


def validate(values: dict[str, Any], schema: type[BaseModel]) -> Any:
    """``values`` (nested dicts) as a checked ``schema`` instance; one-line ConfigError otherwise."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a table of keys and values, not {type(values).__name__}")
    try:
        return schema.model_validate(_without_renamed_nulls(values))
    except ValidationError as exc:
        raise config_error(exc, schema) from None
    except RecursionError:
        raise ConfigError("the config nests too deeply") from None


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    schema: type | None = None,
    *,
    machine: bool = True,
) -> Any:
    """Assemble and check a config from its sources (default schema: :class:`FedRunConfig`, so one file
    serves single-device and federated runs). ``machine``: also refuse what this machine cannot do."""
    values: dict[str, Any] = {}
    if preset:
        values = merge(values, read_preset(preset))
    if config_file:
        values = merge(values, read_config_file(config_file))
    if overrides:
        values = merge(values, nest(dict(parse_override(o) for o in overrides)))
    cfg = validate(values, schema or FedRunConfig)
    if machine:
        check_machine(cfg)
    return cfg


def config_from_dict(values: dict[str, Any], schema: type | None = None, *, machine: bool = False) -> Any:
    """A config from nested dicts, e.g. ``cfg.to_dict()`` sent to a client (the machine is not checked by default:
    a config is checked where it is made)."""
    cfg = validate(values, schema or FedRunConfig)
    if machine:
        check_machine(cfg)
    return cfg
