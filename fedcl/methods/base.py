"""Continual-learning methods and plugins: hooks into the one training loop (:mod:`fedcl.learner`).

A *method* decides which parameters train (input tuning, head-only, fine-tuning);
*plugins* add continual-learning mechanisms on top of any method (EWC, LwF,
replay, FedProx's proximal term, joint training). Neither copies the loop. For each
experience (or each federated round of it) the learner calls, in order:

``before_experience`` -> per batch: ``replay_batch``, ``penalty`` -> ``after_experience``.

State a plugin must keep between federated rounds (a replay buffer, Fisher
information, the previous model) is returned by ``state_dict`` as tensors; the
ClientApp stores it in the client's ``context.state`` and restores it next round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from fedcl.model import ContinualModel
from fedcl.registry import Registry

if TYPE_CHECKING:
    from fedcl.data.scenarios import Experience
    from fedcl.learner import Learner, TrainSettings


@dataclass
class Batch:
    """One training batch as the penalty hooks see it."""

    inputs: torch.Tensor  # model-ready images, or backbone features when ``inputs_are_features``
    labels: torch.Tensor
    task_ids: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    inputs_are_features: bool


class TrainedCounts:
    """Samples in the training loss, per class and per task (replayed and distilled ones included):
    the weights a federated server gives a client's head rows and per-task parts."""

    def __init__(self, num_classes: int, num_tasks: int) -> None:
        self.classes = torch.zeros(num_classes, dtype=torch.long)
        self.tasks = torch.zeros(num_tasks, dtype=torch.long)

    def add_batch(self, labels: torch.Tensor, task_ids: torch.Tensor) -> None:
        self.classes += torch.bincount(labels.cpu(), minlength=len(self.classes))[: len(self.classes)]
        self.tasks += torch.bincount(task_ids.cpu(), minlength=len(self.tasks))[: len(self.tasks)]

    def add(self, classes: list[int], tasks: list[int], samples: int) -> None:
        """``samples`` more for each of ``classes`` and ``tasks`` (e.g. distilled logits)."""
        self.classes[classes] += samples
        self.tasks[tasks] += samples


class Plugin:
    """Hooks into the training loop; every hook is optional."""

    name = "plugin"

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"unexpected option(s) {', '.join(sorted(options))}")

    def reshape_stream(self, stream: list[Experience]) -> list[Experience]:
        """The experiences actually trained on, in order (joint training merges them)."""
        return stream

    def before_experience(self, learner: Learner, experience: Experience) -> None:
        """Called before training on an experience (or on one round of it)."""

    def train_classes(self, learner: Learner, experience: Experience) -> set[int]:
        """Extra classes whose logits take part in the training loss (e.g. replayed ones)."""
        return set()

    def replay_batch(self, learner: Learner, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Stored (uint8 images, labels, task ids) to append to the current batch."""
        return None

    def penalty(self, learner: Learner, batch: Batch) -> torch.Tensor | None:
        """An extra loss term for the current batch (EWC, LwF, FedProx...)."""
        return None

    def count_trained(self, learner: Learner, batch: Batch, counts: TrainedCounts) -> None:
        """Add what this plugin's loss term trains beyond the batch's own labels (e.g. distilled classes)."""

    def after_experience(self, learner: Learner, experience: Experience) -> None:
        """Called after training on an experience (or on one round of it)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """State kept across federated rounds (tensors only; empty when there is none)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""


class Method(Plugin):
    """Chooses the trainable parameters; may also use any plugin hook."""

    name = "base"
    #: False -> the model is built with the identity transform (nothing to tune in the input).
    uses_transform = True
    #: True -> the method changes backbone weights, so each learner needs its own copy of the backbone.
    trains_backbone = False

    def configure(self, model: ContinualModel, settings: TrainSettings) -> list[dict]:
        """Set ``requires_grad`` and return optimiser parameter groups."""
        raise NotImplementedError

    def exchanged_keys(self, model: ContinualModel) -> list[str]:
        """The state keys that travel in a federation, declared from the model alone (no learner needed):
        transform and head; fine-tuning methods add the backbone stages they train."""
        return model.lightweight_keys()

    def can_cache_features(self, model: ContinualModel) -> bool:
        """True when backbone features of an input never change (identity transform, frozen backbone)."""
        return not self.uses_transform and model.backbone.frozen


def head_group(model: ContinualModel, settings: TrainSettings) -> list[dict]:
    params = [p for p in model.head.parameters()]
    for p in params:
        p.requires_grad_(True)
    return [{"params": params, "lr": settings.head_lr, "name": "head"}] if params else []


def freeze_transform(model: ContinualModel) -> None:
    for p in model.transform.parameters():
        p.requires_grad_(False)


def trainable_named(model: ContinualModel) -> dict[str, torch.nn.Parameter]:
    """The parameters the method trains, by name (what EWC and FedProx act on)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}

METHODS: Registry[type[Method]] = Registry("method", key="method.name")

PLUGINS: Registry[type[Plugin]] = Registry("plugin", key="method.plugins")
