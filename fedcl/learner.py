"""The one training loop. Methods plug into it through hooks (:mod:`fedcl.methods`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedcl.config import TrainConfig
from fedcl.data.preprocessing import to_model_input
from fedcl.data.scenarios import Benchmark, Experience
from fedcl.methods.base import Method
from fedcl.model import ContinualModel

@dataclass
class TrainSettings(TrainConfig):
    """The ``[train]`` settings plus the seed that drives shuffling."""

    seed: int = 0


class FeatureCache:
    """Backbone features of experiences whose inputs are never transformed (keyed by experience)."""

    def __init__(self) -> None:
        self._store: dict[int, torch.Tensor] = {}

    def get(self, experience: Experience, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = id(experience.data)
        if key not in self._store:
            self._store[key] = compute()
        return self._store[key]


class Learner:
    """Trains a :class:`ContinualModel` on experiences, one after another, with a method plugin."""

    def __init__(
        self,
        model: ContinualModel,
        method: Method,
        settings: TrainSettings,
        image_size: int,
        device: torch.device | str = "cpu",
        task_ids_at_test: bool = False,
        regularizers: list | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.method = method
        self.settings = settings
        self.image_size = image_size
        self.task_ids_at_test = task_ids_at_test
        self.param_groups = method.configure(model, settings)
        self.cache = FeatureCache() if method.can_cache_features(model) else None
        #: extra loss terms beside the method's (e.g. FedProx's proximal term), same signature as Method.penalty
        self.regularizers = list(regularizers or [])
        self.seen_classes: set[int] = set()
        self.current_task: int | None = None
        self.generator = torch.Generator().manual_seed(settings.seed)

    # ------------------------------------------------------------------ inputs
    def _class_mask(self, classes) -> torch.Tensor:
        mask = torch.zeros(self.model.head.num_classes, dtype=torch.bool, device=self.device)
        mask[list(classes)] = True
        return mask

    def _features_of(self, experience: Experience) -> torch.Tensor:
        def compute() -> torch.Tensor:
            chunks = [self.model.encode(x, ids) for x, _, ids in self._image_batches(experience, self.settings.eval_batch_size, shuffle=False)]
            return torch.cat(chunks)

        with torch.inference_mode():
            return self.cache.get(experience, compute).clone()

    def _image_batches(self, experience: Experience, batch_size: int, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(experience)
        order = torch.randperm(n, generator=self.generator) if shuffle else torch.arange(n)
        data = experience.data
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            images = to_model_input(data.images[idx], self.image_size, self.device)
            labels = data.labels[idx].to(self.device)
            yield images, labels, torch.full_like(labels, experience.task_id)

    def _batches(self, experience: Experience, batch_size: int, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]]:
        """(inputs, labels, task ids, inputs_are_features)."""
        if self.cache is None:
            for images, labels, ids in self._image_batches(experience, batch_size, shuffle):
                yield images, labels, ids, False
            return
        features = self._features_of(experience)
        labels_all = experience.data.labels.to(self.device)
        n = len(experience)
        order = torch.randperm(n, generator=self.generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size].to(self.device)
            labels = labels_all[idx]
            yield features[idx], labels, torch.full_like(labels, experience.task_id), True

    # ------------------------------------------------------------------ training
    def make_optimizer(self) -> torch.optim.Optimizer | None:
        groups = [g for g in self.param_groups if g["params"]]
        if not groups:
            return None
        s = self.settings
        if s.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        return torch.optim.Adam(groups, lr=s.lr, weight_decay=s.weight_decay)

    def begin_task(self, experience: Experience) -> None:
        self.current_task = experience.task_id
        self.seen_classes.update(experience.classes)
        if experience.task_id not in self.model.seen_tasks:
            self.model.seen_tasks.append(experience.task_id)

    def train_experience(self, experience: Experience, epochs: int | None = None) -> dict[str, float]:
        """Train on one experience (all of it, for ``epochs`` passes); returns loss and counts."""
        self.begin_task(experience)
        self.method.before_experience(self, experience)
        s = self.settings
        optimizer = self.make_optimizer()
        train_mask = {"current": experience.classes, "seen": self.seen_classes, "none": range(self.model.head.num_classes)}[s.logit_mask]
        mask = self._class_mask(train_mask)
        self.model.train()
        total_loss, seen, start = 0.0, 0, time.perf_counter()
        for _ in range(epochs if epochs is not None else s.epochs):
            for inputs, labels, ids, are_features in self._batches(experience, s.batch_size, shuffle=True):
                features = inputs if are_features else self.model.encode(inputs, ids)
                logits = self.model.head(features, ids).masked_fill(~mask, float("-inf"))
                loss = F.cross_entropy(logits, labels)
                for term in (self.method, *self.regularizers):
                    extra = term.penalty(self, features, logits, labels)
                    if extra is not None:
                        loss = loss + extra
                if optimizer is not None and loss.requires_grad:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                self.model.head.observe(features.detach(), labels)
                total_loss += float(loss.detach()) * len(labels)
                seen += len(labels)
        self.model.eval()
        self.method.after_experience(self, experience)
        return {"loss": total_loss / max(seen, 1), "num_examples": seen, "train_time_s": time.perf_counter() - start}

    # ------------------------------------------------------------------ evaluation
    def eval_mask(self, experience: Experience) -> torch.Tensor:
        if self.task_ids_at_test or not self.seen_classes:
            return self._class_mask(experience.classes)
        return self._class_mask(self.seen_classes)

    @torch.inference_mode()
    def evaluate_experience(self, experience: Experience) -> float:
        self.model.eval()
        mask = self.eval_mask(experience)
        correct = 0
        for inputs, labels, ids, are_features in self._batches(experience, self.settings.eval_batch_size, shuffle=False):
            task_ids = ids if self.task_ids_at_test else None
            if are_features:
                logits = self.model.head(inputs, task_ids)
            else:
                logits = self.model(inputs, task_ids)
            correct += int((logits.masked_fill(~mask, float("-inf")).argmax(1) == labels).sum())
        return correct / max(len(experience), 1)

    def evaluate(self, stream: list[Experience]) -> list[float]:
        return [self.evaluate_experience(e) for e in stream]

    def fit(self, benchmark: Benchmark, on_task_end: Callable[[int, list[float]], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Train on the whole stream; returns the accuracy matrix and the untrained model's accuracies."""
        initial = None
        if benchmark.scenario != "class_incremental":
            initial = np.array(self.evaluate(benchmark.test_stream))
        rows = []
        for experience in benchmark.train_stream:
            self.train_experience(experience)
            rows.append(self.evaluate(benchmark.test_stream))
            if on_task_end is not None:
                on_task_end(experience.task_id, rows[-1])
        return np.array(rows), initial
