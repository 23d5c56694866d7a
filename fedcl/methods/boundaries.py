"""Task-boundary detection shared by plugins that consolidate when the task changes."""

from __future__ import annotations

import torch


class TaskBoundary:
    """Remembers the last task trained; ``changed(task)`` is True at the first experience of a new task."""

    def __init__(self) -> None:
        self.last_task: int | None = None

    def changed(self, task: int) -> bool:
        was = self.last_task
        self.last_task = task
        return was is not None and was != task

    def state(self) -> dict[str, torch.Tensor]:
        return {} if self.last_task is None else {"last_task": torch.tensor(self.last_task)}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.last_task = int(state["last_task"]) if "last_task" in state else None
