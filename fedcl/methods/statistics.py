"""Bookkeeping for statistical heads: each training sample enters the sums exactly once.

A client spends ``rounds_per_task`` federated rounds on a task, and a single-device
run may ask for several epochs; a statistical head must still count each sample
once. :class:`GatheredTasks` remembers which tasks this learner has already
gathered; its ``state_dict`` is plugin state, so it persists across rounds and
across kill/resume through the ClientApp's plugin-state mechanism. The learner
gathers only samples of tasks not yet gathered, the first time it trains them.

The federated transport (sending only the change since the last upload, once per
task, and a final collect round for clients never sampled after a task) is done
separately, in :mod:`fedcl.federation`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fedcl.methods.base import Plugin

if TYPE_CHECKING:
    from fedcl.data.scenarios import Experience


class GatheredTasks(Plugin):
    """The set of task ids whose samples are already in the head's sums (added by the learner itself)."""

    name = "gathered_tasks"

    def __init__(self) -> None:
        super().__init__()
        self.tasks: set[int] = set()

    @staticmethod
    def sample_tasks(experience: Experience) -> torch.Tensor:
        return experience.task_ids_of(torch.arange(len(experience))).cpu()

    def ungathered(self, experience: Experience) -> torch.Tensor:
        """Indices of the experience's samples whose task has not been gathered yet."""
        tasks = self.sample_tasks(experience)
        done = torch.tensor(sorted(self.tasks), dtype=tasks.dtype)
        return (~torch.isin(tasks, done)).nonzero(as_tuple=True)[0]

    def mark(self, experience: Experience) -> None:
        self.tasks.update(self.sample_tasks(experience).unique().tolist())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"tasks": torch.tensor(sorted(self.tasks), dtype=torch.long)} if self.tasks else {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "tasks" in state:
            self.tasks = set(state["tasks"].tolist())
