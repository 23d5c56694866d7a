"""Ridge-regression head W = (G + lambda I)^-1 C from sums, optionally on a fixed random projection (RanPAC)."""

from __future__ import annotations

import math

import torch

from fedcl.heads.base import HEADS
from fedcl.heads.statistics import STATS_DTYPE, StatisticalHead

#: lambda candidates for generalized cross-validation: tr(G_c)/D times these factors
GCV_FACTORS = torch.logspace(-6, 3, 37, dtype=STATS_DTYPE)


def gcv_regularization(eigenvalues: torch.Tensor, projected_sq: torch.Tensor, target_ss: float, n: float) -> float:
    """The lambda minimising GCV(l) = n RSS(l) / (n - df(l) - 1)^2 over a fixed grid.

    ``eigenvalues`` of the centred Gram matrix, ``projected_sq`` the squared row norms of V^T C_c,
    ``target_ss`` = sum ||y - y_mean||^2: all functions of the sums. The intercept costs one degree of freedom.
    """
    scale = float(eigenvalues.sum()) / len(eigenvalues)
    best, best_score = scale, math.inf
    for factor in GCV_FACTORS.tolist():
        lam = scale * factor
        inv = 1.0 / (eigenvalues + lam)
        rss = target_ss - 2 * float((projected_sq * inv).sum()) + float((eigenvalues * projected_sq * inv * inv).sum())
        df = float((eigenvalues * inv).sum()) + 1.0
        if n - df <= 0:
            continue
        score = n * max(rss, 0.0) / (n - df) ** 2
        if score < best_score:
            best, best_score = lam, score
    return best


@HEADS.register("ridge")
class RidgeHead(StatisticalHead):
    """Least-squares classifier on one-hot targets with an intercept (centred sums), over the seen classes.

    h = phi, or h = ReLU(R^T phi) with R (D x ``projection_dim``) Gaussian, drawn from ``projection_seed``
    on every client and on the server: a non-persistent buffer, never part of the exchanged state.
    Rule for lambda: ``regularization=None`` (default) picks it by generalized cross-validation computed
    from G, C and the counts (no held-out data, deterministic), then multiplies it by
    ``regularization_scale``; a float fixes lambda.
    """

    uses_gram = True

    def __init__(self, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None,
                 projection_dim: int = 0, projection_seed: int = 0, regularization: float | None = None,
                 regularization_scale: float = 1.0) -> None:
        if projection_dim < 0 or (regularization is not None and regularization <= 0) or regularization_scale <= 0:
            raise TypeError("projection_dim must be >= 0, regularization and regularization_scale > 0")
        super().__init__(feature_dim, num_classes, task_classes, statistic_dim=projection_dim or feature_dim)
        self.projection_dim, self.projection_seed = projection_dim, projection_seed
        self.regularization, self.regularization_scale = regularization, regularization_scale
        if projection_dim:
            generator = torch.Generator().manual_seed(projection_seed)
            self.register_buffer("projection", torch.randn(feature_dim, projection_dim, generator=generator, dtype=STATS_DTYPE), persistent=False)

    def statistics_of(self, features: torch.Tensor) -> torch.Tensor:
        h = features.to(STATS_DTYPE)
        return torch.relu(h @ self.projection) if self.projection_dim else h

    def centred(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(centred G, centred C (D, K_seen), feature mean, class frequencies, N)."""
        seen = self.seen()
        n = float(self.counts.sum())
        mean = self.sums.sum(0) / n
        freq = self.counts[seen] / n
        gram = self.gram_matrix() - n * torch.outer(mean, mean)
        cross = self.sums[seen].T - n * torch.outer(mean, freq)
        return gram, cross, mean, freq, n

    def chosen_regularization(self) -> float:
        return self._solve()[2]

    def _solve(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        gram, cross, mean, freq, n = self.centred()
        eigenvalues, vectors = torch.linalg.eigh(gram)
        eigenvalues = eigenvalues.clamp(min=0)
        projected = vectors.T @ cross
        if self.regularization is None:
            target_ss = n - n * float((freq * freq).sum())
            lam = gcv_regularization(eigenvalues, projected.pow(2).sum(1), target_ss, n) * self.regularization_scale
        else:
            lam = self.regularization
        weight = vectors @ (projected / (eigenvalues + lam).unsqueeze(1))
        return weight.T, freq - mean @ weight, lam

    def solve(self) -> tuple[torch.Tensor, torch.Tensor]:
        weight, bias, _ = self._solve()
        return weight, bias
