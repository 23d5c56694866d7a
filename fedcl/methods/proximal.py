"""FedProx's client-side proximal term: mu/2 * ||w - w_start||^2 over the trained parameters.

Anchored when an experience (a federated round) starts, i.e. at the global model the
client received. ``federation.strategy = "fedprox"`` adds it with ``federation.proximal_mu``.
"""

from __future__ import annotations

import torch

from fedcl.methods.base import PLUGINS, Plugin, trainable_named


@PLUGINS.register("proximal")
class Proximal(Plugin):
    name = "proximal"

    def __init__(self, mu: float = 0.01) -> None:
        super().__init__()
        if mu < 0:
            raise ValueError("mu must be at least 0")
        self.mu = float(mu)
        self.params: list[torch.nn.Parameter] = []
        self.anchors: list[torch.Tensor] = []

    def anchor(self, params: list[torch.nn.Parameter]) -> None:
        self.params = list(params)
        self.anchors = [p.detach().clone() for p in self.params]

    def before_experience(self, learner, experience) -> None:
        self.anchor(list(trainable_named(learner.model).values()))

    def penalty(self, learner, batch) -> torch.Tensor | None:
        if self.mu == 0 or not self.params:
            return None
        return 0.5 * self.mu * sum((p - a).pow(2).sum() for p, a in zip(self.params, self.anchors))
