"""The one training loop. Methods plug into it through hooks (:mod:`fedcl.methods`)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from fedcl.config import TrainConfig
from fedcl.data.preprocessing import to_model_input
from fedcl.data.scenarios import Benchmark, Experience
from fedcl.deferred_dynamo import dynamo_deferred
from fedcl.guards import finite_loss
from fedcl.methods.base import Batch, Method, Plugin, TrainedCounts
from fedcl.methods.statistics import GatheredTasks
from fedcl.model import ContinualModel
from fedcl.precision import plan_execution
from fedcl.sample_features import SampleFeatures, TensorLRU


class TrainSettings(TrainConfig):
    """The ``[train]`` settings plus the seed that drives shuffling."""

    seed: int = 0


def content_key(experience: Experience) -> tuple:
    """What an experience's backbone features depend on when no transform is learned: its images, labels, task
    and input shift (a 128-bit BLAKE2 digest of the bytes: a few hundred small images take microseconds)."""
    data = experience.data
    digest = hashlib.blake2b(digest_size=16)
    for tensor in (data.images, data.labels):
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy())
    return experience.task_id, experience.domain, digest.hexdigest()


class FeatureCache:
    """Backbone features of experiences whose inputs are never transformed, keyed by the experience's content.

    One cache can serve many learners: every round's learner of a simulated client shares its worker's cache
    (:func:`fedcl.builder.shared_feature_cache`), so a frozen client encodes each sample once per run, not once
    per round. Features are kept in CPU memory (GPU memory stays for training); the least recently used entries
    go when the cache holds more than ``max_bytes``. ``samples`` keeps features per sample, for statistical
    heads' single pass (:mod:`fedcl.sample_features`: filled in large batches before clients train)."""

    def __init__(self, max_bytes: int = 1 << 29) -> None:
        self.experiences = TensorLRU(max_bytes)
        self.samples = SampleFeatures(max_bytes)

    def get(self, experience: Experience, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = content_key(experience)
        if key in self.experiences:
            return self.experiences.get(key)
        value = compute().cpu()
        self.experiences.put(key, value)
        return value


def create_optimizer(groups: list[dict], settings: TrainConfig) -> torch.optim.Optimizer:
    """``train.optimizer`` over ``groups``, built without importing ``torch._dynamo`` (:mod:`fedcl.deferred_dynamo`)."""
    with dynamo_deferred():
        if settings.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
        return torch.optim.Adam(groups, lr=settings.lr, weight_decay=settings.weight_decay)


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
        plugins: list[Plugin] | None = None,
    ) -> None:
        self.device = torch.device(device)
        # a backbone only ever run forward (frozen features) is channels-last on the CPU too: ~3x faster CPU
        # convolutions for EfficientNet-Lite0 (docs/performance.md section 11); train.channels_last still decides
        layout = settings.channels_last
        if layout is None and self.device.type in ("cpu", "cuda") and method.can_cache_features(model) and not method.trains_backbone:
            layout = True
        self.plan = plan_execution(self.device, settings.precision, layout, settings.gpu_memory_fraction)
        self.model = model.place(self.device, self.plan.channels_last)
        model.backbone.set_activation_checkpointing(settings.activation_checkpointing)
        # batch sizes rounded up to a multiple of half the smaller batch size: a few shapes (a client's last batch
        # and each client's whole encode pass would each be a new one), full and replay-enlarged batches unchanged
        pad = settings.pad_batches == "always" or (settings.pad_batches == "auto" and self.device.type == "cuda")
        model.backbone.pad_multiple = max(1, min(settings.batch_size, settings.eval_batch_size) // 2) if pad else None
        self.method = method
        self.settings = settings
        self.image_size = image_size
        self.task_ids_at_test = task_ids_at_test
        self.param_groups = method.configure(model, settings)
        self.cache = FeatureCache() if method.can_cache_features(model) else None
        #: the method first, then continual-learning plugins (EWC, LwF, replay, FedProx's proximal term...)
        self.plugins: list[Plugin] = [method, *(plugins or [])]
        #: tasks already in a statistical head's sums (plugin state: persists across federated rounds)
        self.gathered = GatheredTasks()
        self.plugins.append(self.gathered)
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
            if not chunks:
                return torch.empty(0, self.model.backbone.feature_dim, device=self.device)
            return torch.cat(chunks)

        with torch.inference_mode(), self.plan.autocast():
            return self.cache.get(experience, compute).to(self.device).float().clone()

    def _image_batches(self, experience: Experience, batch_size: int, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(experience)
        order = torch.randperm(n, generator=self.generator) if shuffle else torch.arange(n)
        data = experience.data
        for idx in self._chunks(order, batch_size):
            images = self.plan.layout(to_model_input(data.images[idx], self.image_size, self.device))
            labels = data.labels[idx].to(self.device)
            yield images, labels, experience.task_ids_of(idx).to(self.device)

    def _chunks(self, order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        """``order`` in batches of ``batch_size``; while the backbone's BatchNorm layers train (train mode needs 2 or
        more samples), a last batch of one sample joins the batch before it."""
        chunks = list(order.split(batch_size))
        if len(chunks) > 1 and len(chunks[-1]) == 1 and self.model.training and self.method.trains_backbone:
            chunks[-2:] = [torch.cat(chunks[-2:])]
        return chunks

    def batches(self, experience: Experience, batch_size: int, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]]:
        """(inputs, labels, task ids, inputs_are_features)."""
        if self.cache is None:
            for images, labels, ids in self._image_batches(experience, batch_size, shuffle):
                yield images, labels, ids, False
            return
        features = self._features_of(experience)
        labels_all = experience.data.labels.to(self.device)
        n = len(experience)
        order = torch.randperm(n, generator=self.generator) if shuffle else torch.arange(n)
        for idx in self._chunks(order, batch_size):
            yield features[idx.to(self.device)], labels_all[idx.to(self.device)], experience.task_ids_of(idx).to(self.device), True

    def _with_replay(self, inputs, labels, ids, are_features):
        """Append the plugins' replayed samples to a training batch."""
        for plugin in self.plugins:
            extra = plugin.replay_batch(self, len(labels))
            if extra is None:
                continue
            images, extra_labels, extra_ids = (t.to(self.device) for t in extra)
            extra_inputs = self.plan.layout(to_model_input(images, self.image_size, self.device))
            if are_features:
                with torch.no_grad():
                    extra_inputs = self.model.encode(extra_inputs, extra_ids)
            inputs = torch.cat([inputs, extra_inputs])
            labels = torch.cat([labels, extra_labels])
            ids = torch.cat([ids, extra_ids])
        return inputs, labels, ids

    # ------------------------------------------------------------------ training
    def make_optimizer(self) -> torch.optim.Optimizer | None:
        groups = [g for g in self.param_groups if g["params"]]
        return create_optimizer(groups, self.settings) if groups else None

    def begin_task(self, experience: Experience) -> None:
        self.current_task = experience.task_id
        self.seen_classes.update(experience.classes)
        for task in experience.tasks:
            if task not in self.model.seen_tasks:
                self.model.seen_tasks.append(task)

    def train_mask(self, experience: Experience) -> torch.Tensor:
        """Classes whose logits compete in the training loss (``train.logit_mask`` plus replayed classes)."""
        classes = {"current": set(experience.classes), "seen": set(self.seen_classes), "none": set(range(self.model.head.num_classes))}[self.settings.logit_mask]
        for plugin in self.plugins:
            classes |= plugin.train_classes(self, experience)
        return self._class_mask(classes)

    def stream(self, experiences: list[Experience]) -> list[Experience]:
        """What the plugins make of a stream of experiences (joint training merges it)."""
        for plugin in self.plugins:
            experiences = plugin.reshape_stream(experiences)
        return experiences

    def train_experience(self, experience: Experience, epochs: int | None = None) -> dict[str, float]:
        """Train on one experience (all of it, for ``epochs`` passes); returns loss and counts."""
        self.begin_task(experience)
        for plugin in self.plugins:
            plugin.before_experience(self, experience)
        s = self.settings
        optimizer = self.make_optimizer()
        if optimizer is None and self.model.head.gathers_statistics:
            return self.gather_statistics(experience)
        scaler = self.plan.grad_scaler()
        mask = self.train_mask(experience)
        self.model.train()
        total_loss, seen, start = 0.0, 0, time.perf_counter()
        counts = TrainedCounts(self.model.head.num_classes, len(self.model.head.task_classes))
        for _ in range(epochs if epochs is not None else s.epochs):
            for inputs, labels, ids, are_features in self.batches(experience, s.batch_size, shuffle=True):
                inputs, labels, ids = self._with_replay(inputs, labels, ids, are_features)
                if len(labels) < 2 and self.method.trains_backbone:
                    continue  # a client with one sample: BatchNorm in train mode cannot take it (nothing to learn from)
                with self.plan.autocast():
                    features = inputs if are_features else self.model.encode(inputs, ids)
                    logits = self.model.head(features, ids).float().masked_fill(~mask, float("-inf"))
                    loss = F.cross_entropy(logits, labels)
                    batch = Batch(inputs, labels, ids, features, logits, are_features)
                    for plugin in self.plugins:
                        extra = plugin.penalty(self, batch)
                        if extra is not None:
                            loss = loss + extra
                            plugin.count_trained(self, batch, counts)
                if optimizer is not None and loss.requires_grad:
                    self.plan.backward_step(loss, optimizer, scaler)
                counts.add_batch(labels, ids)
                self.model.head.observe(features.detach().float(), labels)
                total_loss += finite_loss(loss, experience.task_id) * len(labels)
                seen += len(labels)
        self.model.eval()
        for plugin in self.plugins:
            plugin.after_experience(self, experience)
        return {"loss": total_loss / max(seen, 1), "num_examples": seen, "train_time_s": time.perf_counter() - start,
                "class_counts": counts.classes.tolist(), "task_counts": counts.tasks.tolist()}

    def gather_statistics(self, experience: Experience) -> dict[str, float]:
        """Nothing trains and the head is statistical: one pass adds the experience's samples to the sums."""
        start = time.perf_counter()
        counts = TrainedCounts(self.model.head.num_classes, len(self.model.head.task_classes))
        hits = self.cache.samples.hits if self.cache is not None else 0
        gathered = self.accumulate_statistics(experience, counts)
        for plugin in self.plugins:
            plugin.after_experience(self, experience)
        # prefetched features (inline simulation) are charged their measured encoding time: the client's time
        # stays what encoding its own samples costs
        prefetched_s = (self.cache.samples.hits - hits) * self.cache.samples.seconds_per_sample if self.cache is not None else 0.0
        return {"loss": 0.0, "num_examples": gathered, "train_time_s": time.perf_counter() - start + prefetched_s,
                "class_counts": counts.classes.tolist(), "task_counts": counts.tasks.tolist()}

    @torch.no_grad()
    def accumulate_statistics(self, experience: Experience, counts: TrainedCounts | None = None) -> int:
        """One forward pass per sample of a task not gathered yet (:class:`GatheredTasks`), features added
        to the head's float64 sums; no gradient, no stored features. Returns the number of samples added."""
        self.model.eval()
        fresh = self.gathered.ungathered(experience)
        for start in range(0, len(fresh), self.settings.eval_batch_size):
            idx = fresh[start : start + self.settings.eval_batch_size]
            if self.cache is None or not self.cache.samples.prefetched:
                features = self.encode_images(experience.data.images[idx], experience.task_ids_of(idx))
            else:
                features = self.cache.samples.features(experience, idx, self.encode_images).to(self.device)
            labels = experience.data.labels[idx].to(self.device)
            ids = experience.task_ids_of(idx).to(self.device)
            self.model.head.observe(features.float(), labels)
            if counts is not None:
                counts.add_batch(labels, ids)
        self.gathered.mark(experience)
        return len(fresh)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Backbone features of stored images (resized and laid out for this learner)."""
        inputs = self.plan.layout(to_model_input(images, self.image_size, self.device))
        with self.plan.autocast():
            return self.model.encode(inputs, task_ids.to(self.device))

    def prefetch_features(self, experiences: list[Experience]) -> int:
        """Encode the samples of ``experiences`` into the shared per-sample cache in batches of ``eval_batch_size``
        (nothing when features are not cacheable). Returns the number of samples encoded."""
        if self.cache is None:
            return 0
        self.model.eval()
        return self.cache.samples.prefetch(experiences, self.encode_images, self.settings.eval_batch_size)

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
        for inputs, labels, ids, are_features in self.batches(experience, self.settings.eval_batch_size, shuffle=False):
            task_ids = ids if self.task_ids_at_test else None
            with self.plan.autocast():
                logits = self.model.head(inputs, task_ids) if are_features else self.model(inputs, task_ids)
            logits = logits.float()
            correct += int((logits.masked_fill(~mask, float("-inf")).argmax(1) == labels).sum())
        return correct / max(len(experience), 1)

    def evaluate(self, stream: list[Experience]) -> list[float]:
        return [self.evaluate_experience(e) for e in stream]

    def fit(self, benchmark: Benchmark, on_task_end: Callable[[int, list[float]], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Train on the whole stream; returns the accuracy matrix (one row per trained experience)
        and the untrained model's accuracies."""
        initial = None
        if benchmark.scenario != "class_incremental":
            initial = np.array(self.evaluate(benchmark.test_stream))
        rows = []
        for experience in self.stream(benchmark.train_stream):
            self.train_experience(experience)
            rows.append(self.evaluate(benchmark.test_stream))
            if on_task_end is not None:
                on_task_end(experience.task_id, rows[-1])
        return np.array(rows), initial
