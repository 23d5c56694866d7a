"""Helpers shared by test modules."""

import copy

import torch

from fedcl.config import build_config
from fedcl.builder import make_benchmark, make_learner, make_method, make_model


def set_args(overrides) -> list[str]:
    """``--set`` options for the command line, one per ``key=value`` override."""
    return [a for o in overrides for a in ("--set", o)]


def tiny_learner(lite0, base: list[str], *overrides: str, machine: bool = True):
    """(config, benchmark, model, learner) on the smoke preset with a private copy of the backbone
    (``machine=False``: settings this machine would refuse, e.g. autocast on a CPU)."""
    cfg = build_config("smoke", None, list(base) + list(overrides), machine=machine)
    benchmark = make_benchmark(cfg)
    method = make_method(cfg)
    model = make_model(cfg, benchmark, method, backbone=copy.deepcopy(lite0))
    return cfg, benchmark, model, make_learner(cfg, model, method, benchmark, torch.device("cpu"))
