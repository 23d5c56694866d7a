"""Experience replay with a per-client memory whose budget is set in samples or in bytes.

The memory holds raw uint8 samples of the tasks this learner has trained on,
balanced over (task, class) groups, and never more than its budget. Samples of
the current task are added after each experience (round) and become replayable
once the learner has moved on: only *past-task* samples are appended to batches.
"""

from __future__ import annotations

import torch

from fedcl.methods.base import PLUGINS, Plugin

#: bytes per stored sample beyond its pixels: the label and the task id (int64 each)
SAMPLE_OVERHEAD_BYTES = 16


@PLUGINS.register("replay")
class Replay(Plugin):
    name = "replay"

    def __init__(self, buffer_size: int | None = None, buffer_bytes: int | None = None, batch_fraction: float = 0.5) -> None:
        super().__init__()
        if (buffer_size is None) == (buffer_bytes is None):
            raise ValueError("set exactly one of buffer_size (samples) or buffer_bytes")
        if (buffer_size is not None and buffer_size < 1) or (buffer_bytes is not None and buffer_bytes < 1):
            raise ValueError("the buffer budget must be positive")
        if not 0 < batch_fraction <= 4:
            raise ValueError("batch_fraction must be in (0, 4]")
        self.buffer_size, self.buffer_bytes, self.batch_fraction = buffer_size, buffer_bytes, float(batch_fraction)
        self.images = torch.empty(0, dtype=torch.uint8)
        self.labels = torch.empty(0, dtype=torch.long)
        self.task_ids = torch.empty(0, dtype=torch.long)
        self.current_task: int | None = None

    # ------------------------------------------------------------------ budget
    def capacity(self, sample_shape: tuple[int, ...]) -> int:
        """How many samples fit the budget."""
        if self.buffer_size is not None:
            return self.buffer_size
        per_sample = int(torch.Size(sample_shape).numel()) + SAMPLE_OVERHEAD_BYTES
        return self.buffer_bytes // per_sample

    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + len(self.labels) * SAMPLE_OVERHEAD_BYTES

    def __len__(self) -> int:
        return len(self.labels)

    # ------------------------------------------------------------------ hooks
    def before_experience(self, learner, experience) -> None:
        self.current_task = experience.task_id

    def replayable(self) -> torch.Tensor:
        """Indices of stored samples from past tasks."""
        return (self.task_ids != self.current_task).nonzero(as_tuple=True)[0]

    def train_classes(self, learner, experience) -> set[int]:
        return set(self.labels[self.replayable()].tolist())

    def replay_batch(self, learner, batch_size: int):
        idx = self.replayable()
        want = max(1, round(batch_size * self.batch_fraction))
        if len(idx) == 0:
            return None
        pick = idx[torch.randint(len(idx), (min(want, len(idx)),), generator=learner.generator)]
        return self.images[pick], self.labels[pick], self.task_ids[pick]

    def after_experience(self, learner, experience) -> None:
        tasks = experience.sample_task_ids if experience.sample_task_ids is not None else torch.full((len(experience),), experience.task_id)
        known = set(self.task_ids.tolist())
        new = torch.tensor([i for i, t in enumerate(tasks.tolist()) if t not in known], dtype=torch.long)
        if len(new) == 0:
            return
        capacity = self.capacity(tuple(experience.data.images.shape[1:]))
        new = new[torch.randperm(len(new), generator=learner.generator)][:capacity]
        data = experience.data
        images = data.images[new] if len(self.images) == 0 else torch.cat([self.images, data.images[new]])
        self.images, self.labels, self.task_ids = images, torch.cat([self.labels, data.labels[new]]), torch.cat([self.task_ids, tasks[new]])
        self._rebalance(capacity)

    def _rebalance(self, capacity: int) -> None:
        """Keep at most ``capacity`` samples, split as evenly as possible over (task, class) groups."""
        groups = {}
        for i, key in enumerate(zip(self.task_ids.tolist(), self.labels.tolist())):
            groups.setdefault(key, []).append(i)
        # water-filling: small groups keep everything, the rest share what is left equally
        quota, remaining = {}, capacity
        by_size = sorted(groups, key=lambda k: (len(groups[k]), k))
        for n, key in enumerate(by_size):
            quota[key] = min(len(groups[key]), remaining // (len(by_size) - n))
            remaining -= quota[key]
        keys = sorted(groups)
        keep = torch.tensor(sorted(i for k in keys for i in groups[k][: quota[k]]), dtype=torch.long)
        self.images, self.labels, self.task_ids = self.images[keep], self.labels[keep], self.task_ids[keep]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        if len(self) == 0:
            return {}
        return {"images": self.images, "labels": self.labels, "task_ids": self.task_ids}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "images" in state:
            self.images, self.labels, self.task_ids = state["images"], state["labels"].long(), state["task_ids"].long()
