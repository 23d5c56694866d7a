"""Benchmarks, streams and experiences (Avalanche style) for the three continual scenarios.

- class_incremental: disjoint class groups per task, task identity unknown at test time;
- task_incremental: the same groups, task identity given at train and test time;
- domain_incremental: the same classes in every task under a different input shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedcl.config import SCENARIOS
from fedcl.data.arrays import DatasetSplits, ImageArrays
from fedcl.data.shifts import DEFAULT_DOMAINS, apply_shift, parse_domain
from fedcl.errors import ConfigError


@dataclass
class Experience:
    """One task's data in one split."""

    task_id: int
    classes: list[int]
    data: ImageArrays
    domain: str = "none"
    #: per-sample task ids when the experience mixes tasks (joint training); None -> all ``task_id``
    sample_task_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.data)

    @property
    def tasks(self) -> list[int]:
        return sorted(set(self.sample_task_ids.tolist())) if self.sample_task_ids is not None else [self.task_id]

    def task_ids_of(self, index: torch.Tensor) -> torch.Tensor:
        if self.sample_task_ids is not None:
            return self.sample_task_ids[index]
        return torch.full((len(index),), self.task_id, dtype=torch.long)


def merge_experiences(stream: list[Experience]) -> Experience:
    """All of a stream's data as one experience; each sample keeps its task id."""
    if not stream:
        raise ValueError("cannot merge an empty stream")
    images = torch.cat([e.data.images for e in stream])
    labels = torch.cat([e.data.labels for e in stream])
    ids = torch.cat([e.task_ids_of(torch.arange(len(e))) for e in stream])
    classes = sorted({c for e in stream for c in e.classes})
    return Experience(stream[-1].task_id, classes, ImageArrays(images, labels), "joint", ids)


@dataclass
class Benchmark:
    scenario: str
    dataset: str
    num_classes: int
    class_order: list[int]
    train_stream: list[Experience]
    test_stream: list[Experience]
    class_names: list[str] = field(default_factory=list)

    @property
    def num_tasks(self) -> int:
        return len(self.train_stream)

    @property
    def task_classes(self) -> list[list[int]]:
        return [e.classes for e in self.train_stream]

    @property
    def task_ids_at_test(self) -> bool:
        """Whether the learner is told the task of a test sample."""
        return self.scenario == "task_incremental"


def _take_per_class(arrays: ImageArrays, classes: list[int], limit: int | None, generator: torch.Generator) -> torch.Tensor:
    """Indices of (at most ``limit``) seeded-random samples of each class, in random order."""
    picked = []
    for c in classes:
        idx = (arrays.labels == c).nonzero(as_tuple=True)[0]
        idx = idx[torch.randperm(len(idx), generator=generator)]
        picked.append(idx if limit is None else idx[:limit])
    index = torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)
    return index[torch.randperm(len(index), generator=generator)]


def build_benchmark(
    splits: DatasetSplits,
    scenario: str = "class_incremental",
    num_tasks: int = 5,
    classes_per_task: int = 2,
    class_order: list[int] | None = None,
    shuffle_classes: bool = True,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    domains: list[str] | None = None,
    seed: int = 0,
) -> Benchmark:
    """Split a dataset into a train and a test stream of ``num_tasks`` experiences."""
    if scenario not in SCENARIOS:
        raise ConfigError(f"data.scenario '{scenario}' is not one of {', '.join(SCENARIOS)}")
    if num_tasks < 1 or classes_per_task < 1:
        raise ConfigError("data.num_tasks and data.classes_per_task must be at least 1")
    generator = torch.Generator().manual_seed(seed)
    n = splits.num_classes
    if class_order is not None:
        if sorted(set(class_order)) != sorted(class_order) or any(not 0 <= c < n for c in class_order):
            raise ConfigError(f"data.class_order must list distinct classes in 0..{n - 1}")
        order = list(class_order)
    elif shuffle_classes:
        order = torch.randperm(n, generator=generator).tolist()
    else:
        order = list(range(n))

    if scenario == "domain_incremental":
        classes = order[:classes_per_task] if classes_per_task < n else order
        domains = list(domains) if domains else DEFAULT_DOMAINS[:num_tasks]
        if len(domains) != num_tasks:
            raise ConfigError(f"data.domains lists {len(domains)} shifts for {num_tasks} tasks")
        for d in domains:
            parse_domain(d)
        train_idx = _take_per_class(splits.train, classes, None if max_train_per_class is None else max_train_per_class * num_tasks, generator)
        test_idx = _take_per_class(splits.test, classes, max_test_per_class, generator)
        chunks = train_idx.tensor_split(num_tasks)
        test = splits.test.subset(test_idx)
        train_stream = [
            Experience(t, classes, _shifted(splits.train.subset(chunk), d, seed * 1000 + t), d) for t, (chunk, d) in enumerate(zip(chunks, domains))
        ]
        test_stream = [Experience(t, classes, _shifted(test, d, seed * 1000 + 500 + t), d) for t, d in enumerate(domains)]
    else:
        needed = num_tasks * classes_per_task
        if needed > len(order):
            raise ConfigError(f"{num_tasks} tasks x {classes_per_task} classes need {needed} classes; {splits.name} has {len(order)}")
        groups = [order[t * classes_per_task : (t + 1) * classes_per_task] for t in range(num_tasks)]
        train_stream, test_stream = [], []
        for t, group in enumerate(groups):
            train_stream.append(Experience(t, group, splits.train.subset(_take_per_class(splits.train, group, max_train_per_class, generator))))
            test_stream.append(Experience(t, group, splits.test.subset(_take_per_class(splits.test, group, max_test_per_class, generator))))
    for exp in train_stream:
        if len(exp) == 0:
            raise ConfigError(f"task {exp.task_id} has no training samples (classes {exp.classes})")
    return Benchmark(scenario, splits.name, n, order, train_stream, test_stream, splits.class_names)


def _shifted(arrays: ImageArrays, domain: str, seed: int) -> ImageArrays:
    return ImageArrays(apply_shift(arrays.images, domain, seed), arrays.labels)
