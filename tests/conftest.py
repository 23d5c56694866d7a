"""Shared fixtures and the test tiers. Every test runs offline: hub look-ups fail fast instead of retrying.

Tiers (``pytest -m unit``, ``-m integration``, ``-m system``; plain ``pytest`` runs all):
each test file has one tier in :data:`TIERS`; a test may override it with its own tier marker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray lowers its workers' priority (niceness +15): beside another pytest-xdist worker on two cores they starve,
# rounds take minutes and Ray's health checks give up. The suite's Ray workers run at normal priority.
os.environ.setdefault("RAY_worker_niceness", "0")
# Two xdist workers already fill the two cores: one compute thread per process (this one and every process a test
# starts) instead of two each, which oversubscribed the cores (spinning OpenMP threads). Measured on the suite:
# 630 s -> 582 s wall with the variable set for the processes tests start, `fedcl train -p smoke` inside it 73 s -> 19 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """One fedcl cache folder ($FEDCL_DATA: client partitions, downloads) for the whole run: made by the first pytest
    process, inherited by xdist workers and every process a test starts, removed at the end. A $FEDCL_DATA set by
    the user is kept (it may hold their datasets), and then receives the partitions too."""
    if not os.environ.get("FEDCL_DATA"):
        os.environ["FEDCL_DATA"] = tempfile.mkdtemp(prefix="fedcl-test-cache-")
        config.stash[_OWN_CACHE] = os.environ["FEDCL_DATA"]


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_CACHE, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


_OWN_CACHE = pytest.StashKey[str]()

torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])) if os.environ["OMP_NUM_THREADS"].isdigit() else 1)

UNIT, INTEGRATION, SYSTEM = "unit", "integration", "system"
#: test file -> tier. unit: one module, in memory, seconds; integration: real components together in one
#: process (files, backbones, the training loop, in-process federations); system: whole runs in other
#: processes (CLI, Ray, Flower deployments) and fuzzing with thousands of examples.
TIERS = {
    "test_config.py": UNIT,
    "test_suite.py": UNIT,
    "test_heads.py": UNIT,
    "test_transforms.py": UNIT,
    "test_metrics.py": UNIT,
    "test_federation_units.py": UNIT,
    "test_strategy.py": UNIT,
    "test_properties.py": UNIT,
    "test_structure.py": UNIT,
    "test_federated_semantics.py": UNIT,
    "test_stat_heads.py": UNIT,
    "test_guards.py": INTEGRATION,
    "test_outputs.py": INTEGRATION,
    "test_backbones.py": INTEGRATION,
    "test_data.py": INTEGRATION,
    "test_learner.py": INTEGRATION,
    "test_plugins.py": INTEGRATION,
    "test_bad_inputs.py": INTEGRATION,
    "test_federated_methods.py": INTEGRATION,
    "test_sweep.py": SYSTEM,
    "test_published_plan.py": INTEGRATION,
    "test_fused.py": INTEGRATION,
    "test_gpu_script.py": SYSTEM,
    "test_federated_statistics.py": INTEGRATION,
    "test_gram_factor.py": INTEGRATION,
    "test_cli.py": SYSTEM,
    "test_simulation.py": SYSTEM,
    "test_reliability.py": SYSTEM,
    "test_deployment.py": SYSTEM,
    "test_flwr_run.py": SYSTEM,
    "test_notebooks.py": SYSTEM,
    "test_config_fuzz.py": SYSTEM,
    "test_fuzz.py": SYSTEM,
    "test_report.py": SYSTEM,
    "test_dependencies.py": SYSTEM,
}


#: the slowest modules (seconds on two workers, 2026-11-30), handed out first so that no long module starts last
SLOWEST_FIRST = ["test_deployment.py", "test_simulation.py", "test_notebooks.py", "test_federated_methods.py", "test_report.py",
                 "test_flwr_run.py", "test_reliability.py", "test_sweep.py", "test_federated_statistics.py", "test_fuzz.py", "test_outputs.py",
                 "test_dependencies.py", "test_cli.py", "test_gpu_script.py", "test_config_fuzz.py", "test_published_plan.py"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the modules slowest first (:data:`SLOWEST_FIRST`, each module's tests kept together and in order) and
    mark each test with its file's tier unless it carries a tier marker of its own."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))
    for item in items:
        if any(m.name in (UNIT, INTEGRATION, SYSTEM) for m in item.iter_markers()):
            continue
        tier = TIERS.get(Path(str(item.fspath)).name)
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def lite0():
    """The default backbone with its packaged ImageNet weights (built once per session)."""
    from fedcl.backbones import create_backbone

    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def fmnist():
    from fedcl.data import load_dataset

    return load_dataset("fashion_mnist")
