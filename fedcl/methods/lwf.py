"""Learning without Forgetting: distil the previous model's predictions on old classes.

When a new task starts, the current transform and head (in a federation: the global
model the client received) are frozen as the *old model*. While training the new
task, ``alpha * T^2 * KL(old || new)`` over the old tasks' classes (temperature T)
is added to the loss. Heads that need task ids (multi-head) are distilled task by task.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from fedcl.methods.base import PLUGINS, Plugin
from fedcl.methods.boundaries import TaskBoundary


def _distill(new: torch.Tensor, old: torch.Tensor, temperature: float) -> torch.Tensor:
    target = F.softmax(old / temperature, dim=1)
    return F.kl_div(F.log_softmax(new / temperature, dim=1), target, reduction="batchmean") * temperature**2


@PLUGINS.register("lwf")
class LwF(Plugin):
    name = "lwf"

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0) -> None:
        super().__init__()
        if alpha < 0 or temperature <= 0:
            raise ValueError("needs alpha >= 0 and temperature > 0")
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.boundary = TaskBoundary()
        self.old_state: dict[str, torch.Tensor] = {}
        self.old_tasks: list[int] = []
        self._old_model = None

    def before_experience(self, learner, experience) -> None:
        if self.boundary.changed(experience.task_id):
            model = learner.model
            self.old_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.") or not model.backbone.frozen}
            self.old_tasks = [t for t in model.seen_tasks if t != experience.task_id]
            self._old_model = None

    def old_model(self, learner):
        """The frozen previous model; shares the backbone when it is frozen."""
        if self._old_model is None:
            model = learner.model
            backbone = model.backbone
            model.backbone = None  # deep-copy transform and head only
            try:
                old = copy.deepcopy(model)
            finally:
                model.backbone = backbone
            old.backbone = backbone if backbone.frozen else copy.deepcopy(backbone)
            old.load_state_dict(self.old_state, strict=False)
            old.eval().requires_grad_(False)
            self._old_model = old
        return self._old_model

    def penalty(self, learner, batch) -> torch.Tensor | None:
        if not self.old_state or not self.old_tasks or self.alpha == 0:
            return None
        old = self.old_model(learner)
        head = learner.model.head
        with torch.no_grad():
            old_features = batch.inputs if batch.inputs_are_features else old.encode(batch.inputs, batch.task_ids)
        classes_of = head.task_classes
        if head.uses_task_ids:
            losses = []
            for t in self.old_tasks:
                ids = torch.full_like(batch.labels, t)
                cols = classes_of[t]
                with torch.no_grad():
                    target = old.head(old_features, ids)[:, cols]
                losses.append(_distill(head(batch.features, ids)[:, cols], target, self.temperature))
            return self.alpha * sum(losses) / len(losses)
        cols = sorted({c for t in self.old_tasks for c in classes_of[t]})
        with torch.no_grad():
            target = old.head(old_features, batch.task_ids)[:, cols]
        return self.alpha * _distill(head(batch.features, batch.task_ids)[:, cols], target, self.temperature)

    def count_trained(self, learner, batch, counts) -> None:
        """Distillation trains the old classes' head rows on every sample of the batch (and, for heads
        that need task ids, the old tasks' heads). A per-task *transform* of an old task gets no gradient
        from it, but shares the task weights; such a combination is diluted towards the received global."""
        head = learner.model.head
        cols = sorted({c for t in self.old_tasks for c in head.task_classes[t]})
        counts.add(cols, self.old_tasks if head.uses_task_ids else [], len(batch.labels))

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = self.boundary.state()
        if self.old_state:
            out.update({f"old/{k}": v for k, v in self.old_state.items()})
            out["old_tasks"] = torch.tensor(self.old_tasks, dtype=torch.long)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.boundary.load(state)
        self.old_state = {k[4:]: v for k, v in state.items() if k.startswith("old/")}
        self.old_tasks = state["old_tasks"].tolist() if "old_tasks" in state else []
        self._old_model = None
