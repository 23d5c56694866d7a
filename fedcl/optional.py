"""Optional dependencies: import them with a one-line answer saying which extra to install."""

from __future__ import annotations

import importlib
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


def require_partitioners() -> ModuleType:
    """flwr-datasets, to split one shared dataset over clients (the ``simulation`` extra)."""
    return require("flwr_datasets", "simulation", "splitting one shared dataset over clients (federation.partition)", "flwr-datasets")


def require_accountant() -> ModuleType:
    """dp-accounting, the privacy accountant of central DP (the ``privacy`` extra)."""
    return require("dp_accounting", "privacy", "the privacy accountant of central DP", "dp-accounting")
