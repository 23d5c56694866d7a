"""Heads that are functions of summed class statistics (NCM, LDA, ridge).

Their whole state is float64 SUM buffers: ``counts`` (K,), ``sums`` (K, D) (for
ridge, ``sums.T`` is the cross-moment C = sum h y^T) and, where needed, ``gram``,
the packed upper triangle of G = sum h h^T (D(D+1)/2 values, row-major). Sums add
up over batches, tasks and clients, so a head fitted from accumulated sums is the
head fitted on all the data at once; a federated server adds the clients' changes
(aggregation kind ``"sum"``). The classifier is solved lazily from the sums and
cached until a buffer changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch

from fedcl.heads.base import Head

STATS_DTYPE = torch.float64


@lru_cache(maxsize=4)
def upper_indices(dim: int, device: str) -> torch.Tensor:
    """Flat (row-major) indices of the upper triangle of a (dim, dim) matrix, diagonal included, in packing order.
    (A gather with them is several times faster than boolean-mask indexing, which counts the mask every call.)"""
    rows, cols = torch.triu_indices(dim, dim, device=device)
    return rows * dim + cols


def pack_upper(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.reshape(-1).index_select(0, upper_indices(matrix.shape[0], str(matrix.device)))


def unpack_upper(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """The symmetric (dim, dim) matrix whose packed upper triangle is ``packed``."""
    full = packed.new_zeros(dim * dim).index_copy_(0, upper_indices(dim, str(packed.device)), packed).view(dim, dim)
    return full + full.T - torch.diag(full.diagonal())


def packed_size(dim: int) -> int:
    return dim * (dim + 1) // 2


def buffers_digest(module: torch.nn.Module) -> bytes:
    """A BLAKE2b digest of every buffer's name, device, dtype, shape and bytes (equal digests: equal buffers)."""
    digest = hashlib.blake2b(digest_size=32)
    for name, buffer in module.named_buffers():
        digest.update(f"{name}|{buffer.device}|{buffer.dtype}|{tuple(buffer.shape)};".encode())
        digest.update(buffer.detach().cpu().reshape(-1).view(torch.uint8).numpy().data)
    return digest.digest()


def _fold_before_reading(head: "StatisticalHead", prefix: str, keep_vars: bool) -> None:
    head.fold()


class StatisticalHead(Head):
    """Base of heads built from summed statistics; subclasses implement :meth:`solve`."""

    gathers_statistics = True
    #: True -> the head keeps the second moment G (LDA, ridge); NCM needs only counts and sums
    uses_gram = False

    def __init__(self, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None,
                 statistic_dim: int | None = None) -> None:
        super().__init__(feature_dim, num_classes, task_classes)
        self.statistic_dim = statistic_dim or feature_dim
        self.register_buffer("counts", torch.zeros(num_classes, dtype=STATS_DTYPE))
        self.register_buffer("sums", torch.zeros(num_classes, self.statistic_dim, dtype=STATS_DTYPE))
        if self.uses_gram:
            self.register_buffer("gram", torch.zeros(packed_size(self.statistic_dim), dtype=STATS_DTYPE))
        self._cache_key: tuple | None = None
        self._cache_digest: bytes | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        #: the statistic vectors observed since :meth:`record_rows` (None: not recorded, or over the limit)
        self._rows: list[torch.Tensor] | None = None
        self._row_limit = 0
        #: how many of the last batches in ``_rows`` are not yet added to ``gram`` (see :meth:`fold`)
        self._unfolded = 0
        self._fold_held = False
        self.register_state_dict_pre_hook(_fold_before_reading)

    # ------------------------------------------------------------------ statistics
    def statistics_of(self, features: torch.Tensor) -> torch.Tensor:
        """The vectors h whose moments are summed (the features; ridge may project them)."""
        return features.to(STATS_DTYPE)

    @torch.no_grad()
    def observe(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch to the sums (float64)."""
        if self._rows is not None:
            self._refuse_while_held()
        h = self.statistics_of(features.detach().to(self.counts.device))
        labels = labels.to(self.counts.device)
        self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=STATS_DTYPE))
        self.sums.index_add_(0, labels, h)
        if self._rows is not None:
            self._keep_rows(h)
        elif self.uses_gram:
            self.gram += pack_upper(h.T @ h)

    def record_rows(self, limit: int) -> None:
        """Keep the statistic vectors observed from now on, up to ``limit`` of them (a federated client
        that gathered few samples uploads its Gram change as a factor: :mod:`fedcl.federation.factors`).
        While they are kept, their Gram matrix is added to ``gram`` only when something reads it (:meth:`fold`):
        a client whose change travels as a factor never packs it."""
        self._refuse_while_held()
        self.fold()
        self._rows, self._row_limit = [], limit

    def _refuse_while_held(self) -> None:
        if self._fold_held:
            raise RuntimeError("a statistical head cannot gather statistics while its Gram matrix is read unfolded")

    def _keep_rows(self, h: torch.Tensor) -> None:
        self._rows.append(h.detach().clone())
        self._unfolded += 1
        if sum(len(r) for r in self._rows) > self._row_limit:
            self.fold()
            self._rows = None  # too many: the Gram change travels packed

    def fold(self) -> None:
        """Add the Gram matrix of the kept rows not yet in ``gram`` (reading the state, the classifier or
        :meth:`gram_matrix` folds first, so readers never see a partial ``gram``)."""
        if self._fold_held or not self._unfolded:
            return
        if self.uses_gram:
            rows = torch.cat(self._rows[len(self._rows) - self._unfolded:]).to(self.gram)
            self.gram += pack_upper(rows.T @ rows)
        self._unfolded = 0

    @contextmanager
    def gram_unfolded(self) -> Iterator[None]:
        """Read the state without folding: ``gram`` then lacks the kept rows (:meth:`observed_rows`), which a
        caller that uses only the rows (a factor upload) never needs packed."""
        held, self._fold_held = self._fold_held, True
        try:
            yield
        finally:
            self._fold_held = held

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "gram" in state_dict:
            self._unfolded = 0  # the kept rows' Gram belonged to the state that was replaced

    def observed_rows(self) -> torch.Tensor | None:
        """The (n, statistic_dim) vectors observed since :meth:`record_rows`: their Gram matrix is the change
        of ``gram`` since then. None when not recorded or when there were more than ``limit``."""
        if self._rows is None:
            return None
        return torch.cat(self._rows) if self._rows else self.gram.new_zeros(0, self.statistic_dim)

    def gram_matrix(self) -> torch.Tensor:
        self.fold()
        return unpack_upper(self.gram, self.statistic_dim)

    def aggregation_kinds(self) -> dict[str, str]:
        with self.gram_unfolded():  # only the names are read
            return {k: "sum" for k in self.state_dict()}

    def seen(self) -> torch.Tensor:
        """Boolean mask of the classes with at least one sample."""
        return self.counts > 0

    # ------------------------------------------------------------------ classifier
    def solve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (K_seen, D), bias (K_seen,)) for the seen classes, from the sums."""
        raise NotImplementedError

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The solved classifier, recomputed only when a sum buffer's values changed: a buffer written in place
        or replaced (a federated round loads the global state) is compared by a digest of its bytes, so the same
        sums loaded again, as in every round of a task after its statistics arrived, reuse the solution."""
        self.fold()
        key = tuple((name, b.data_ptr(), b._version) for name, b in self.named_buffers())
        if key != self._cache_key:
            digest = buffers_digest(self)
            if digest != self._cache_digest:
                self._cache = self.solve() if bool(self.seen().any()) else None
                self._cache_digest = digest
            self._cache_key = key
        return self._cache

    def scores(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return h @ weight.T + bias

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        logits = features.new_full((features.shape[0], self.num_classes), float("-inf"), dtype=torch.float32)
        solved = self.classifier()
        if solved is None:
            return logits
        with torch.autocast(features.device.type, enabled=False):
            h = self.statistics_of(features.to(self.counts.device))
            seen = self.seen().nonzero(as_tuple=True)[0]
            logits[:, seen.to(logits.device)] = self.scores(h, *solved).float().to(logits.device)
        return logits
