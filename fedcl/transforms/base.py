"""Base class for learned input transformations, and the per-task wrapper."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedcl.registry import Registry


class InputTransform(nn.Module):
    """Maps images in [0, 1], shape (N, 3, S, S), to images of the same shape.

    Every transform starts as (or near) the identity, so training starts from the
    frozen backbone's own features. ``task_ids`` is ignored by shared transforms.
    """

    per_task = False

    def __init__(self, image_size: int, channels: int = 3) -> None:
        super().__init__()
        self.image_size = image_size
        self.channels = channels

    def forward(self, images: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.apply_transform(images)

    def apply_transform(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def aggregation_kinds(self) -> dict[str, str]:
        """How a federated server averages each state key: 'examples' (by examples) or 'task:<t>'."""
        return {k: "examples" for k in self.state_dict()}


class PerTaskTransform(InputTransform):
    """One independent transform per task; each sample goes through its task's transform."""

    per_task = True

    def __init__(self, factory: Callable[[], InputTransform], num_tasks: int) -> None:
        first = factory()
        super().__init__(first.image_size, first.channels)
        self.transforms = nn.ModuleList([first, *(factory() for _ in range(num_tasks - 1))])

    @property
    def num_tasks(self) -> int:
        return len(self.transforms)

    def forward(self, images: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        if task_ids is None:
            raise ValueError("a per-task transform needs task ids (the model infers them when unknown)")
        task_ids = task_ids.to(images.device)
        unique = task_ids.unique()
        if unique.numel() == 1:
            return self.transforms[int(unique)](images)
        out = torch.empty_like(images)
        for t in unique.tolist():
            idx = task_ids == t
            out[idx] = self.transforms[t](images[idx])
        return out

    def aggregation_kinds(self) -> dict[str, str]:
        """A task's transform is averaged only over clients that trained on that task."""
        return {k: f"task:{k.split('.')[1]}" for k in self.state_dict()}

    def for_task(self, task_id: int) -> InputTransform:
        return self.transforms[task_id]


TRANSFORMS: Registry[type[InputTransform]] = Registry("transform", key="model.transform.name")
