"""Frozen backbone features per sample, so that many small experiences can share large encoding batches.

A simulated client holds a few samples per task: encoding them one client at a time runs the backbone on
batches of 1-3 images, about 10x less efficient per image than batches of 256. When no transform is learned
and the backbone is frozen, a sample's features depend on its image bytes alone (the input shift of a
domain is applied to the stored images when the benchmark is built; the identity transform ignores task ids;
the frozen backbone is in eval mode, so there is no batch dependence). :meth:`SampleFeatures.prefetch` encodes
every client's samples in large batches once; a client's :meth:`SampleFeatures.features` are then cache hits.
Keys still carry the sample's task id and the experience's domain, so that nothing relies on that argument.

Batching changes features at float rounding (about 5e-6 for EfficientNet-Lite0: convolution kernels differ
by batch size), so an inline run that prefetched and the same run on Ray (whose workers encode each client's
samples as the client does) give statistical heads equal to float tolerance, not bit for bit; runs on one
backend are bit-for-bit reproducible. A client charges each prefetched sample it uses the prefetch's measured
encoding time per sample, so simulated client times still include the backbone's forward pass.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import torch

from fedcl.data.scenarios import Experience

#: images (as stored, uint8) and their task ids -> features (one row per image)
Encoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_keys(experience: Experience, index: torch.Tensor) -> list[tuple]:
    """One key per sample of ``index``: (task id, domain, image shape and dtype, 128-bit BLAKE2 digest of its bytes)."""
    images = experience.data.images[index].contiguous()
    rows = images.view(len(index), -1).view(torch.uint8).numpy() if len(index) else []
    layout = (tuple(images.shape[1:]), str(images.dtype))
    ids = experience.task_ids_of(index).tolist()
    return [(task, experience.domain, layout, hashlib.blake2b(row, digest_size=16).digest()) for task, row in zip(ids, rows)]


class TensorLRU:
    """Tensors by key, in CPU memory; the least recently used go when they hold more than ``max_bytes``."""

    def __init__(self, max_bytes: int = 1 << 29) -> None:
        self._store: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.max_bytes, self.nbytes = max_bytes, 0

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: tuple) -> bool:
        return key in self._store

    def get(self, key: tuple) -> torch.Tensor:
        """The stored tensor, now the most recently used."""
        self._store.move_to_end(key)
        return self._store[key]

    def put(self, key: tuple, value: torch.Tensor) -> None:
        if key in self._store:
            old = self._store.pop(key)  # replaced: its bytes no longer count
            self.nbytes -= old.numel() * old.element_size()
        self.nbytes += value.numel() * value.element_size()
        self._store[key] = value
        while len(self._store) > 1 and self.nbytes > self.max_bytes:
            _, old = self._store.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()


class SampleFeatures(TensorLRU):
    """Features of single samples (a :class:`TensorLRU` keyed by :func:`sample_keys`)."""

    def __init__(self, max_bytes: int = 1 << 29) -> None:
        super().__init__(max_bytes)
        #: whether a prefetch filled the store (learners only look samples up then), and what it cost per sample:
        #: a client charges each hit that much encoding time, so simulated client times still include the backbone
        self.prefetched, self.seconds_per_sample, self.hits = False, 0.0, 0

    def features(self, experience: Experience, index: torch.Tensor, encode: Encoder) -> torch.Tensor:
        """Features of the samples ``index`` of ``experience`` (rows in that order); misses are encoded together."""
        keys = sample_keys(experience, index)
        # hits are read first: storing the misses may evict them
        found = {key: self.get(key) for key in keys if key in self}
        missing = [i for i, key in enumerate(keys) if key not in found]
        if missing:
            where = index[torch.tensor(missing, dtype=torch.long)]
            values = encode(experience.data.images[where], experience.task_ids_of(where)).cpu()
            for i, row in zip(missing, values):
                found[keys[i]] = row.clone()
                self.put(keys[i], found[keys[i]])
        self.hits += len(keys) - len(missing)
        return torch.stack([found[k] for k in keys])

    def prefetch(self, experiences: Iterable[Experience], encode: Encoder, batch_size: int) -> int:
        """Encode every sample of ``experiences`` not stored yet, in batches of ``batch_size`` that mix experiences
        (each distinct sample once). Returns the number of samples encoded."""
        keys: list[tuple] = []
        images: list[torch.Tensor] = []
        ids: list[torch.Tensor] = []
        wanted: set[tuple] = set()
        for experience in experiences:
            new = []
            for i, key in enumerate(sample_keys(experience, torch.arange(len(experience)))):
                if key not in self and key not in wanted:
                    new.append(i)
                    keys.append(key)
                    wanted.add(key)
            if not new:
                continue
            where = torch.tensor(new, dtype=torch.long)
            images.append(experience.data.images[where])
            ids.append(experience.task_ids_of(where))
        if not keys:
            return 0
        all_images, all_ids = torch.cat(images), torch.cat(ids)
        began = time.perf_counter()
        for start in range(0, len(keys), batch_size):
            values = encode(all_images[start : start + batch_size], all_ids[start : start + batch_size]).cpu()
            for key, row in zip(keys[start : start + batch_size], values):
                self.put(key, row.clone())
        self.prefetched, self.seconds_per_sample = True, (time.perf_counter() - began) / len(keys)
        return len(keys)
