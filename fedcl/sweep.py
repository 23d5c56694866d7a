"""Sweeps: methods x scenarios x partitions x seeds, one federated run per cell.

A sweep plan (a TOML file) names a preset, overrides shared by every cell, the seeds, and
named groups of overrides for scenarios, partitions and methods::

    preset = "federated"
    base = ["data.image_size=32"]
    seeds = [0, 1]
    [scenarios]
    class_incremental = ["data.scenario=class_incremental"]
    [partitions]
    iid = ["federation.partition=iid"]
    [methods.input_tuning]
    overrides = []
    [methods.input_tuning_per_task]
    overrides = ["model.transform.per_task=true"]
    scenarios = ["task_incremental"]      # optional: only these scenarios

Each cell runs as its own ``fedcl simulate`` process (peak memory is per run, a
crash loses one cell), forked from a server process that has already imported torch, timm, Flower and
fedcl (``multiprocessing``'s forkserver), so no cell pays those imports; it writes ``<out>/<method>/<scenario>/<partition>/seed<k>/results.json``.
Cells whose results already exist for the same config are skipped, so a stopped
sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fedcl.config import build_config, config_from_dict
from fedcl.errors import ConfigError
from fedcl.federation.settings import FedRunConfig


@dataclass
class Cell:
    method: str
    scenario: str
    partition: str
    seed: int
    overrides: list[str]

    @property
    def path(self) -> Path:
        return Path(self.method) / self.scenario / self.partition / f"seed{self.seed}"

    def labels(self) -> dict[str, object]:
        return {"method": self.method, "scenario": self.scenario, "partition": self.partition, "seed": self.seed}


@dataclass
class SweepPlan:
    """The cells of a sweep and how to build each cell's config."""

    preset: str | None
    base: list[str]
    seeds: list[int]
    scenarios: dict[str, list[str]]
    partitions: dict[str, list[str]]
    methods: dict[str, dict]
    config_file: str | None = None
    source: str = field(default="<sweep plan>")

    def cells(self) -> list[Cell]:
        out = []
        for method, spec in self.methods.items():
            for scenario, scenario_overrides in self.scenarios.items():
                if spec.get("scenarios") and scenario not in spec["scenarios"]:
                    continue
                for partition, partition_overrides in self.partitions.items():
                    for seed in self.seeds:
                        overrides = [*self.base, *scenario_overrides, *partition_overrides, *spec.get("overrides", []), f"seed={seed}"]
                        out.append(Cell(method, scenario, partition, seed, overrides))
        return out

    def config(self, cell: Cell) -> FedRunConfig:
        try:
            return build_config(self.preset, self.config_file, cell.overrides, schema=FedRunConfig)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: cell {cell.path}: {exc}") from None


def _str_list(source: str, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: '{key}' must be a list of \"key=value\" strings, got {value!r}")
    return list(value)


def read_plan(path: str | Path) -> SweepPlan:
    """Parse and check a sweep plan file; every cell's config is validated before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep plan not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse sweep plan {path}: {exc}") from None
    allowed = {"preset", "config", "base", "seeds", "scenarios", "partitions", "methods"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; a sweep plan has {', '.join(sorted(allowed))}")
    for key in ("scenarios", "partitions", "methods"):
        if not isinstance(data.get(key), dict) or not data[key]:
            raise ConfigError(f"{path}: [{key}] must name at least one entry")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{path}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    methods = {}
    for name, spec in data["methods"].items():
        if not isinstance(spec, dict) or set(spec) - {"overrides", "scenarios"}:
            raise ConfigError(f"{path}: [methods.{name}] takes 'overrides' (list) and optional 'scenarios' (list)")
        methods[name] = {"overrides": _str_list(str(path), f"methods.{name}.overrides", spec.get("overrides", [])),
                         "scenarios": spec.get("scenarios")}
        for s in spec.get("scenarios") or []:
            if s not in data["scenarios"]:
                raise ConfigError(f"{path}: methods.{name}.scenarios names '{s}', which is not in [scenarios]")
    plan = SweepPlan(
        preset=data.get("preset"),
        base=_str_list(str(path), "base", data.get("base", [])),
        seeds=seeds,
        scenarios={k: _str_list(str(path), f"scenarios.{k}", v) for k, v in data["scenarios"].items()},
        partitions={k: _str_list(str(path), f"partitions.{k}", v) for k, v in data["partitions"].items()},
        methods=methods,
        config_file=data.get("config"),
        source=str(path),
    )
    for cell in plan.cells():
        plan.config(cell)
    return plan


def _done(cfg: FedRunConfig, out: Path) -> bool:
    path = out / "results.json"
    if not path.exists():
        return False
    try:
        stored = json.loads(path.read_text()).get("config")
        # settings added to fedcl since that run take their defaults, so older results still count
        return config_from_dict(stored, FedRunConfig).to_dict() == cfg.to_dict()
    except (json.JSONDecodeError, OSError, ConfigError, TypeError):
        return False


def run_or_load(cfg: FedRunConfig, out: str | Path, quiet: bool = True) -> dict:
    """Run a federation in this process (no subprocess) unless ``out`` already holds its results."""
    from fedcl.federation.simulation import run_federated

    out = Path(out)
    if _done(cfg, out):
        return json.loads((out / "results.json").read_text())
    return run_federated(cfg, out, quiet=quiet)


#: imported once by the fork server, before any cell is forked from it
PRELOAD = ["torch", "timm", "fedcl.cli", "fedcl.federation.simulation", "fedcl.federation.server_app", "fedcl.federation.client_app",
           "fedcl.federation.client_handlers"]


def _cell_context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _simulate(config_file: str, out: str, log_file: str, environ: dict[str, str]) -> None:
    """The body of a cell's process: ``fedcl simulate`` in the caller's environment at the cell's start, with
    stdout and stderr going to ``log_file``."""
    os.environ.clear()
    os.environ.update(environ)
    with open(log_file, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (the process ends with the cell)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    from fedcl.cli import main

    sys.exit(main(["simulate", "--config", config_file, "--out", out, "--quiet"]))


def run_cell(plan: SweepPlan, cell: Cell, root: Path, log=print) -> dict:
    """Run one cell in its own ``fedcl simulate`` process unless its results exist; returns a status row.
    A cell succeeded when it wrote results for its config (an exit code read by another thread's process
    clean-up can be lost, so the files decide)."""
    cfg = plan.config(cell)
    out = root / cell.path
    if _done(cfg, out):
        return {**cell.labels(), "status": "cached", "seconds": 0.0}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    (out / "cell.json").write_text(json.dumps(cell.labels()))
    start = time.perf_counter()
    environ = {"HF_HUB_OFFLINE": "1", **os.environ}
    process = _cell_context().Process(target=_simulate, args=(str(out / "config.json"), str(out), str(out / "log.txt"), environ))
    process.start()
    process.join()
    seconds = time.perf_counter() - start
    status = "ok" if _done(cfg, out) else f"failed (exit {process.exitcode}; see {out / 'log.txt'})"
    log(f"{cell.path}: {status} in {seconds:.0f} s")
    return {**cell.labels(), "status": status, "seconds": round(seconds, 1)}


def run_plan(plan: SweepPlan, root: str | Path, jobs: int = 1, quiet: bool = False) -> list[dict]:
    """Run every cell (``jobs`` at a time) under a progress bar (cells done, mean final accuracy of the finished
    cells, time left); returns one status row per cell."""
    from fedcl.console import ProgressBar

    root = Path(root)
    cells = plan.cells()
    accuracies: list[float] = []
    finished: list[dict] = []
    with ProgressBar(len(cells), "cells", enabled=not quiet) as bar:
        log = bar.print if not quiet else (lambda _: None)
        log(f"{len(cells)} cells -> {root}")

        def one(cell: Cell) -> dict:
            row = run_cell(plan, cell, root, log)
            if (root / cell.path / "results.json").exists() and row["status"] in ("ok", "cached"):
                accuracies.append(json.loads((root / cell.path / "results.json").read_text())["final_avg_accuracy"])
            finished.append(row)
            bar.update(len(finished), sum(accuracies) / len(accuracies) if accuracies else None)
            return row

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(one, cells))
