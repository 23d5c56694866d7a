"""Optional dependencies: import them with a one-line answer saying which extra to install."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType

from fedcl.errors import FedclError


class MissingExtraError(FedclError):
    """A command needs a package of an optional extra that is not installed."""


def require(module: str, extra: str, purpose: str, package: str | None = None,
            importer: Callable[[str], ModuleType] = importlib.import_module) -> ModuleType:
    """``importer(module)``, or a :class:`MissingExtraError` naming ``pip install 'fedcl[extra]'``."""
    try:
        return importer(module)
    except ImportError:
        raise MissingExtraError(f"{purpose} needs {package or module.split('.')[0]}; install the {extra} extra: "
                                f"pip install 'fedcl[{extra}]'") from None


def require_analysis(purpose: str = "this analysis command") -> None:
    """Check that the ``analysis`` extra (matplotlib, pandas, scipy) is installed."""
    for module in ("pandas", "matplotlib", "scipy"):
        require(module, "analysis", purpose)


def require_ray() -> ModuleType:
    """Ray, for ``federation.backend=ray`` (the ``simulation`` extra)."""
    return require("ray", "simulation", "federation.backend=ray")


@functools.cache
def require_partitioners() -> ModuleType:
    """``flwr_datasets.partitioner``, to split one shared dataset over clients (the ``simulation`` extra).

    Imported without ``flwr_datasets/__init__.py``, which also imports its plotting and metrics (matplotlib, seaborn:
    2.3 of the 3.5 CPU-s that the import costs every process that splits a dataset)."""
    return require("flwr_datasets.partitioner", "simulation", "splitting one shared dataset over clients (federation.partition)",
                   "flwr-datasets", importer=import_without_package_init)


def import_without_package_init(name: str) -> ModuleType:
    """``import name`` (a submodule) without running its top package's ``__init__`` when the package is not imported
    yet: a stand-in package module holds its path while the submodule imports, and is removed afterwards, so a later
    ``import package`` runs the real ``__init__``, which reuses the modules already loaded (one copy of each class).
    Falls back to a plain import when the submodule needs something the package's ``__init__`` defines.
    Known limit: a submodule loaded meanwhile that the package's ``__init__`` does not import itself (for
    flwr-datasets: ``common``) is not an attribute of the real package later; ``from package.sub import x`` and
    ``import package.sub as s`` still work. (Another thread importing the package meanwhile would see the stand-in;
    fedcl splits datasets before it starts threads.)"""
    package = name.partition(".")[0]
    spec = None if package in sys.modules else importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return importlib.import_module(name)
    stand_in = ModuleType(package)
    stand_in.__path__, stand_in.__spec__ = list(spec.submodule_search_locations), spec
    try:
        sys.modules[package] = stand_in
        return importlib.import_module(name)
    except ImportError:
        pass
    finally:
        if sys.modules.get(package) is stand_in:
            del sys.modules[package]
    return importlib.import_module(name)


def require_accountant() -> ModuleType:
    """dp-accounting, the privacy accountant of central DP (the ``privacy`` extra)."""
    return require("dp_accounting", "privacy", "the privacy accountant of central DP", "dp-accounting")
