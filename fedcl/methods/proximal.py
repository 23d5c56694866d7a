"""FedProx's client-side proximal term: mu/2 * ||w - w_global||^2 over the trained parameters."""

from __future__ import annotations

import torch


class ProximalTerm:
    """A learner regulariser anchored at the parameters' values when it is created."""

    def __init__(self, mu: float, params: list[torch.nn.Parameter]) -> None:
        self.mu = mu
        self.params = list(params)
        self.anchors = [p.detach().clone() for p in self.params]

    def penalty(self, learner, features, logits, labels) -> torch.Tensor | None:
        if self.mu == 0 or not self.params:
            return None
        return 0.5 * self.mu * sum((p - a).pow(2).sum() for p, a in zip(self.params, self.anchors))
