"""Continual-learning methods as plugins of the one training loop (:mod:`fedcl.learner`).

A method decides which parameters train and may hook into the loop; it never
copies the loop. Hooks are called in this order for each experience:
``before_experience`` -> (per batch) ``penalty`` -> ``after_experience``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fedcl.model import ContinualModel

if TYPE_CHECKING:
    from fedcl.data.scenarios import Experience
    from fedcl.learner import Learner, TrainSettings


class Method:
    name = "base"
    #: False -> the model is built with the identity transform (nothing to tune in the input).
    uses_transform = True
    #: True -> the method changes backbone weights, so each learner needs its own copy of the backbone.
    trains_backbone = False

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"unexpected option(s) {', '.join(sorted(options))}")

    def configure(self, model: ContinualModel, settings: TrainSettings) -> list[dict]:
        """Set ``requires_grad`` and return optimiser parameter groups."""
        raise NotImplementedError

    def can_cache_features(self, model: ContinualModel) -> bool:
        """True when backbone features of an input never change (identity transform, frozen backbone)."""
        return not self.uses_transform and model.backbone.frozen

    def before_experience(self, learner: Learner, experience: Experience) -> None:
        """Called before training on an experience (or on one round of it)."""

    def penalty(self, learner: Learner, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """An extra loss term for the current batch (EWC, LwF, FedProx...)."""
        return None

    def after_experience(self, learner: Learner, experience: Experience) -> None:
        """Called after training on an experience (or on one round of it)."""


def head_group(model: ContinualModel, settings: TrainSettings) -> list[dict]:
    params = [p for p in model.head.parameters()]
    for p in params:
        p.requires_grad_(True)
    return [{"params": params, "lr": settings.head_lr, "name": "head"}] if params else []


def freeze_transform(model: ContinualModel) -> None:
    for p in model.transform.parameters():
        p.requires_grad_(False)
