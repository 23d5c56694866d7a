"""Linear discriminant analysis head: class means and one shared, shrunk covariance, from sums."""

from __future__ import annotations

import torch

from fedcl.heads.base import HEADS
from fedcl.heads.statistics import StatisticalHead


def oas_shrinkage(covariance: torch.Tensor, num_samples: float) -> float:
    """Oracle Approximating Shrinkage (Chen et al., 2010; scikit-learn's ``oas``) towards tr(S)/D * I.

    Needs only the (maximum-likelihood) covariance and the sample count, both functions of sums.
    """
    d = covariance.shape[0]
    mu = float(covariance.diagonal().sum()) / d
    alpha = float((covariance * covariance).mean())
    num = alpha + mu * mu
    den = (num_samples + 1.0) * (alpha - mu * mu / d)
    return 1.0 if den <= 0 else min(num / den, 1.0)


@HEADS.register("lda")
class LinearDiscriminant(StatisticalHead):
    """Logit_c = f^T S^-1 mu_c - mu_c^T S^-1 mu_c / 2 + log(n_c / N) over the seen classes.

    S is the pooled within-class covariance (G - sum_c n_c mu_c mu_c^T) / N, shrunk to
    (1 - a) S + a tr(S)/D I. The rule for a: ``shrinkage=None`` (default) uses OAS computed
    from the summed moments themselves (no held-out data, deterministic); a float fixes it.
    """

    uses_gram = True

    def __init__(self, feature_dim: int, num_classes: int, task_classes: list[list[int]] | None = None,
                 shrinkage: float | None = None) -> None:
        if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
            raise TypeError(f"shrinkage must be in [0, 1] or unset (OAS): got {shrinkage}")
        super().__init__(feature_dim, num_classes, task_classes)
        self.shrinkage = shrinkage

    def covariance(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(class means of the seen classes, pooled within-class covariance, N)."""
        seen = self.seen()
        n = float(self.counts.sum())
        means = self.sums[seen] / self.counts[seen].unsqueeze(1)
        scatter = self.gram_matrix() - self.sums[seen].T @ means
        return means, scatter / n, n

    def chosen_shrinkage(self) -> float:
        means, cov, n = self.covariance()
        return oas_shrinkage(cov, n) if self.shrinkage is None else self.shrinkage

    def solve(self) -> tuple[torch.Tensor, torch.Tensor]:
        means, cov, n = self.covariance()
        a = oas_shrinkage(cov, n) if self.shrinkage is None else self.shrinkage
        d = cov.shape[0]
        shrunk = (1 - a) * cov + a * float(cov.diagonal().sum()) / d * torch.eye(d, dtype=cov.dtype, device=cov.device)
        weight = torch.linalg.solve(shrunk, means.T).T
        priors = self.counts[self.seen()] / n
        return weight, -0.5 * (weight * means).sum(1) + priors.log()
