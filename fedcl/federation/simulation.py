"""Runs fedcl's ServerApp and ClientApp in simulation, from Python.

``federation.backend = "ray"`` uses Flower's Ray simulation engine (this module is the
only place that calls Flower's deprecated ``run_simulation``); ``"inline"`` runs every
client in this process (:mod:`fedcl.federation.inline`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from fedcl.federation.settings import FedRunConfig


def backend_config(cfg: FedRunConfig) -> dict[str, Any]:
    f = cfg.federation
    resources: dict[str, float] = {"num_cpus": f.client_num_cpus, "num_gpus": f.client_num_gpus}
    init_args: dict[str, Any] = {"include_dashboard": False, "logging_level": "error", "log_to_driver": False}
    if f.ray_num_cpus:
        init_args["num_cpus"] = f.ray_num_cpus
    if f.ray_address:
        init_args = {"address": f.ray_address}
    return {"client_resources": resources, "init_args": init_args}


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def run_federated(cfg: FedRunConfig, out_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Simulate the federation on the configured backend; returns (and writes) the results."""
    from fedcl.federation.server_app import preflight

    preflight(cfg, Path(out_dir))
    if cfg.federation.backend == "inline":
        return run_inline_simulation(cfg, out_dir, quiet)
    return run_ray_simulation(cfg, out_dir, quiet)


CLIENT_STATE_DIR = "client_state"


def _prepare(cfg: FedRunConfig, out: Path) -> Path:
    """Clear the previous results (and, unless resuming, the simulated clients' saved state); returns that folder."""
    from fedcl.federation.server_app import ERROR_FILE

    for stale in ("results.json", ERROR_FILE):
        (out / stale).unlink(missing_ok=True)
    folder = out / CLIENT_STATE_DIR
    if not cfg.federation.resume:
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def _read_results(out: Path) -> dict[str, Any]:
    from fedcl.errors import FedclError
    from fedcl.federation.server_app import ERROR_FILE

    path = out / "results.json"
    if (out / ERROR_FILE).exists():
        raise FedclError(json.loads((out / ERROR_FILE).read_text())["error"])
    if not path.exists():
        raise FedclError(f"the simulation ended without writing {path} (see the log above for the ServerApp error)")
    return json.loads(path.read_text())


def run_inline_simulation(cfg: FedRunConfig, out_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Every client in this process, one after another: no Ray start-up, same apps and messages."""
    from fedcl.federation.client_app import build_client_app
    from fedcl.federation.inline import run_inline
    from fedcl.federation.server_app import build_server_app

    out = Path(out_dir)
    client_state = _prepare(cfg, out)
    flwr_logger = logging.getLogger("flwr")
    if quiet:
        flwr_logger.addFilter(_warnings_only)
    try:
        run_inline(build_server_app(cfg, out), build_client_app(cfg, client_state), cfg.federation.num_clients)
    finally:
        flwr_logger.removeFilter(_warnings_only)
    return _read_results(out)


def run_ray_simulation(cfg: FedRunConfig, out_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Simulate ``cfg.federation.num_clients`` SuperNodes on Ray; returns (and writes) the results.

    ``quiet`` keeps Flower's warnings and errors but drops its info log."""
    from flwr.simulation import run_simulation

    from fedcl.federation.client_app import build_client_app
    from fedcl.federation.server_app import build_server_app

    out = Path(out_dir)
    client_state = _prepare(cfg, out)
    # Each Ray worker uses the CPUs it was given, without oversubscribing the machine.
    threads = str(max(1, int(cfg.federation.client_num_cpus)))
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    flwr_logger = logging.getLogger("flwr")
    if quiet:
        flwr_logger.addFilter(_warnings_only)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            run_simulation(
                server_app=build_server_app(cfg, out),
                client_app=build_client_app(cfg, client_state),
                num_supernodes=cfg.federation.num_clients,
                backend_config=backend_config(cfg),
            )
    finally:
        flwr_logger.removeFilter(_warnings_only)
    return _read_results(out)
