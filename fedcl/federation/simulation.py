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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcl.config.federation import ray_is_local
from fedcl.optional import require_ray
from fedcl.federation.ray_cluster import check_ray_cluster, start_ray
from fedcl.federation.settings import FedRunConfig
from fedcl.outputs import file_identity, prepare_out_dir, promote, recover_dir, staged


def backend_config(cfg: FedRunConfig) -> dict[str, Any]:
    f = cfg.federation
    resources: dict[str, float] = {"num_cpus": f.client_num_cpus, "num_gpus": f.client_num_gpus}
    # address "local": always a new cluster of this run's size. Without it, ray.init() joins any cluster that
    # `ray start` left running on this machine, with that cluster's CPUs instead of federation.ray_num_cpus
    # (RAY_ADDRESS, as `ray job submit` sets it, still chooses the cluster when federation.ray_address is unset).
    init_args: dict[str, Any] = {"include_dashboard": False, "logging_level": "error", "log_to_driver": False}
    if not os.environ.get("RAY_ADDRESS"):
        init_args["address"] = "local"
    if f.ray_num_cpus:
        init_args["num_cpus"] = f.ray_num_cpus
    if not ray_is_local(f.ray_address):
        init_args = {"address": f.ray_address}
    return {"client_resources": resources, "init_args": init_args}


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def run_federated(cfg: FedRunConfig, out_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Simulate the federation on the configured backend; returns (and writes) the results."""
    from fedcl.federation.server_app import preflight

    out = prepare_out_dir(out_dir)  # before any work: an unwritable --out fails now, not after training
    preflight(cfg, out)
    if cfg.federation.backend == "inline":
        return run_inline_simulation(cfg, out, quiet)
    check_ray_cluster(cfg)
    return run_ray_simulation(cfg, out, quiet)


CLIENT_STATE_DIR = "client_state"


def _prepare(cfg: FedRunConfig, out: Path) -> Path:
    """The folder where this run's simulated clients keep their state: a staged copy (promoted over
    ``client_state`` when the run succeeds), so that nothing of the previous run changes before then."""
    from fedcl.federation.checkpoint import STAGED_CHECKPOINT_FILE

    final = out / CLIENT_STATE_DIR
    recover_dir(final)
    folder = staged(final)
    if cfg.federation.resume and (out / STAGED_CHECKPOINT_FILE).is_file():
        folder.mkdir(parents=True, exist_ok=True)  # continue the interrupted run
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted run's scratch state, superseded by this run
    if cfg.federation.resume and final.is_dir():
        shutil.copytree(final, folder)  # continue from the last finished run's state
    elif not cfg.federation.resume:
        (out / STAGED_CHECKPOINT_FILE).unlink(missing_ok=True)
    return folder


def _run_and_read(out: Path, run: Callable[[], None]) -> dict[str, Any]:
    """Run the simulation and return its results; only files that this run wrote count."""
    from fedcl.errors import FedclError
    from fedcl.federation.server_app import ERROR_FILE
    from fedcl.runner import RESULTS_FILE

    path, error = out / RESULTS_FILE, out / ERROR_FILE
    before = file_identity(path), file_identity(error)
    run()
    if file_identity(error) not in (None, before[1]):
        raise FedclError(json.loads(error.read_text())["error"])
    if file_identity(path) in (None, before[0]):
        raise FedclError(f"the simulation ended without writing {path} (see the log above for the ServerApp error)")
    promote(out / CLIENT_STATE_DIR)
    return json.loads(path.read_text())


def run_inline_simulation(cfg: FedRunConfig, out_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Every client in this process, one after another: no Ray start-up, same apps and messages. Clients'
    frozen features are encoded first, in large batches (:func:`fedcl.builder.prefetch_client_features`)."""
    from fedcl.builder import prefetch_client_features
    from fedcl.federation.client_app import build_client_app
    from fedcl.federation.inline import run_inline
    from fedcl.federation.server_app import build_server_app

    out = Path(out_dir)
    client_state = _prepare(cfg, out)
    flwr_logger = logging.getLogger("flwr")
    if quiet:
        flwr_logger.addFilter(_warnings_only)
    try:
        prefetch_client_features(cfg)
        return _run_and_read(out, lambda: run_inline(build_server_app(cfg, out, simulation=True), build_client_app(cfg, client_state), cfg.federation.num_clients))
    finally:
        flwr_logger.removeFilter(_warnings_only)


def run_ray_simulation(cfg: FedRunConfig, out_dir: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Simulate ``cfg.federation.num_clients`` SuperNodes on Ray; returns (and writes) the results.

    ``quiet`` keeps Flower's warnings and errors but drops its info log."""
    require_ray()
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

    def simulate() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            run_simulation(
                server_app=build_server_app(cfg, out, simulation=True),
                client_app=build_client_app(cfg, client_state),
                num_supernodes=cfg.federation.num_clients,
                backend_config=backend_config(cfg),
            )

    try:
        start_ray(backend_config(cfg)["init_args"])
        return _run_and_read(out, simulate)
    finally:
        flwr_logger.removeFilter(_warnings_only)
