"""Optional dependencies: import them with a one-line answer saying which extra to install."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from types import ModuleType

from fedcl.errors import FedclError


class MissingExtraError(FedclError):
    """A command needs a package of an optional extra that is not installed."""


def require(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` naming ``pip install 'fedcl[extra]'``."""
    try:
        return importlib.import_module(module)
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


@functools.cache  # (the module is kept here: the import leaves it out of sys.modules)
def require_partitioners() -> ModuleType:
    """``flwr_datasets.partitioner``, to split one shared dataset over clients (the ``simulation`` extra).

    Imported without ``flwr_datasets/__init__.py``, which also imports its plotting and metrics (matplotlib, seaborn:
    2.3 of the 3.5 CPU-s that the import costs every process that splits a dataset)."""
    try:
        return import_without_package_init("flwr_datasets.partitioner")
    except ImportError:
        raise MissingExtraError("splitting one shared dataset over clients (federation.partition) needs flwr-datasets; "
                                "install the simulation extra: pip install 'fedcl[simulation]'") from None


def import_without_package_init(name: str) -> ModuleType:
    """``import name`` (a submodule) without running its top package's ``__init__`` when the package is not imported
    yet: a stand-in package module holds its path while the submodule imports. Afterwards every module of the package
    that the import loaded is taken out of ``sys.modules`` again (the caller keeps the one it asked for), so a later
    ``import package`` imports the whole package as usual. Falls back to a plain import when the submodule needs
    something the package's ``__init__`` defines. (Another thread importing the package meanwhile would see the
    stand-in; fedcl splits datasets before it starts threads.)"""
    package = name.partition(".")[0]
    spec = None if package in sys.modules else importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return importlib.import_module(name)
    stand_in = ModuleType(package)
    stand_in.__path__, stand_in.__spec__ = list(spec.submodule_search_locations), spec
    before = set(sys.modules)
    module = None
    try:
        sys.modules[package] = stand_in
        module = importlib.import_module(name)
    except ImportError:
        pass
    finally:
        for loaded in set(sys.modules) - before:
            if loaded == package or loaded.startswith(package + "."):
                del sys.modules[loaded]
    return module if module is not None else importlib.import_module(name)


def require_accountant() -> ModuleType:
    """dp-accounting, the privacy accountant of central DP (the ``privacy`` extra)."""
    return require("dp_accounting", "privacy", "the privacy accountant of central DP", "dp-accounting")
