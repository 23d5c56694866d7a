"""Eager torch without ``torch._dynamo``: importing it costs about 2 CPU-s, in every process that builds a backbone or
trains (each ClientApp message in a deployment, each CLI run, each Ray worker), for a compiler fedcl never uses.

Three things pull it in without compiling anything. torchvision's ``ops.roi_align`` imports
``torch._dynamo.utils.is_compile_supported`` and timm and torchvision decorate a few functions with
``torch.compiler.disable`` at import (:func:`import_vision`); ``torch.optim`` imports ``torch._dynamo`` the first
time an optimizer adds a parameter group and around every ``step`` (``graph_break``), and wraps its methods with
``torch._dynamo.disable`` (the learner opens :func:`dynamo_deferred` there; activation checkpointing, through
``torch.utils.checkpoint``, still loads it). Inside :func:`dynamo_deferred`, stand-ins
serve those names: ``graph_break`` does nothing (nothing can be compiling before ``torch._dynamo`` is loaded), a
disabled function runs as it is until ``torch._dynamo`` is loaded and is disabled for real from then on, and any other
use loads the real package at once. Once anything has loaded ``torch._dynamo``, the block changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

DYNAMO = "torch._dynamo"
DYNAMO_UTILS = "torch._dynamo.utils"


def import_vision(name: str) -> types.ModuleType:
    """``importlib.import_module(name)`` for timm, torchvision or their submodules, deferring ``torch._dynamo``."""
    if name in sys.modules:
        return sys.modules[name]
    with dynamo_deferred():
        return importlib.import_module(name)


class _DeferredModule(types.ModuleType):
    """A stand-in for a module of ``torch._dynamo``: any name it does not hold loads the real package first. Dunder
    names do not (``inspect.getmodule`` asks every module in ``sys.modules`` for ``__file__``, ``from m import x``
    asks ``m`` for ``__path__``), except the package's ``__path__``: importing from it needs the real package."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__") and (attr, self.__name__) != ("__path__", DYNAMO):
            raise AttributeError(attr)
        _load_real_dynamo()
        return getattr(importlib.import_module(self.__name__), attr)


def _load_real_dynamo() -> types.ModuleType:
    _remove_stand_ins()
    return importlib.import_module(DYNAMO)


def _remove_stand_ins() -> None:
    """Take the stand-ins out of ``sys.modules`` and off ``torch`` (the real modules stay where they are)."""
    for name in (DYNAMO_UTILS, DYNAMO):
        if isinstance(sys.modules.get(name), _DeferredModule):
            del sys.modules[name]
    torch = importlib.import_module("torch")
    if isinstance(torch.__dict__.get("_dynamo"), _DeferredModule):
        del torch._dynamo


def _is_compile_supported(device_type: str) -> bool:
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


def _dynamo_loaded() -> bool:
    """The real ``torch._dynamo`` is imported (a stand-in does not count)."""
    return DYNAMO in sys.modules and not isinstance(sys.modules[DYNAMO], _DeferredModule)


def _deferred_disable(fn: Callable | None = None, recursive: bool = True, *, reason: str | None = None, wrapping: bool = True) -> Any:
    """``torch.compiler.disable`` (and ``torch._dynamo.disable``, whose ``wrapping`` it accepts) that wraps now and
    disables on the first call made once compiling is possible."""
    if fn is None:
        return functools.partial(_deferred_disable, recursive=recursive, reason=reason)
    disabled: list[Callable] = []

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not disabled and not _dynamo_loaded():  # nothing can be compiling before torch._dynamo is loaded
            return fn(*args, **kwargs)
        if not disabled:  # torch's own disable (``reason`` is new in torch 2.8: passed only when given)
            disabled.append(_REAL_DISABLE[0](fn, recursive, **({"reason": reason} if reason is not None else {})))
        return disabled[0](*args, **kwargs)

    return call


def _no_graph_break(msg: str = "") -> None:
    """``torch._dynamo.graph_break``: nothing while nothing can be compiling (``torch.optim`` calls it around every
    step); the real one once ``torch._dynamo`` is loaded (for a caller that kept this function)."""
    if _dynamo_loaded():
        sys.modules[DYNAMO].graph_break(msg)


#: torch's ``torch.compiler.disable``, kept when the first window opens (windows never overlap: :data:`_WINDOW`)
_REAL_DISABLE: list[Callable] = []
_WINDOW = threading.RLock()


@contextlib.contextmanager
def dynamo_deferred() -> Iterator[None]:
    """Within the block, ``torch._dynamo`` and ``torch._dynamo.utils`` are stand-ins and ``torch.compiler.disable``
    defers; all three are restored on leaving it, also on an error. Nothing changes when ``torch._dynamo`` (or a
    stand-in of an enclosing block) is in ``sys.modules`` already. One block at a time in the process."""
    import torch.compiler

    with _WINDOW:
        if DYNAMO in sys.modules:
            yield
            return
        package, utils = _DeferredModule(DYNAMO), _DeferredModule(DYNAMO_UTILS)
        utils.is_compile_supported = _is_compile_supported
        package.disable, package.graph_break = _deferred_disable, _no_graph_break
        if not _REAL_DISABLE:
            _REAL_DISABLE.append(torch.compiler.disable)
        try:
            sys.modules[DYNAMO], sys.modules[DYNAMO_UTILS] = package, utils
            torch.compiler.disable = _deferred_disable
            yield
        finally:
            torch.compiler.disable = _REAL_DISABLE[0]
            _remove_stand_ins()
