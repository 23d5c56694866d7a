"""How the ServerApp and ClientApp obtain the fedcl config.

``fedcl simulate`` builds the apps around a config object. Under ``flwr run`` the
apps read ``[tool.flwr.app.config]`` (the run config): ``preset``, ``config`` (a
file path, may be empty), ``overrides`` (``key=value`` pairs separated by ``;``)
and ``out-dir``.
"""

from __future__ import annotations

import functools

from flwr.app import Context

from fedcl.config import build_config
from fedcl.federation.settings import FedRunConfig


@functools.lru_cache(maxsize=4)
def _from_run_config(preset: str, config_file: str, overrides: str) -> FedRunConfig:
    pairs = [o.strip() for o in overrides.split(";") if o.strip()]
    return build_config(preset or None, config_file or None, pairs, schema=FedRunConfig)


def resolve_config(cfg: FedRunConfig | None, context: Context) -> FedRunConfig:
    if cfg is not None:
        return cfg
    rc = context.run_config
    return _from_run_config(str(rc.get("preset", "")), str(rc.get("config", "")), str(rc.get("overrides", "")))
