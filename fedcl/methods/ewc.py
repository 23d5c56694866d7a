"""Elastic weight consolidation (online EWC) on the parameters the method trains.

After each experience (federated round) the diagonal empirical Fisher of the
current task, the mean over samples of each sample's squared loss gradient,
is estimated on up to ``fisher_samples`` of its samples and kept as *pending*. When the next task starts, pending Fisher is consolidated
(F <- decay * F + F_task) and the parameters are anchored at their values then
(in a federation: at the global model the client received). The penalty
``strength / 2 * sum F (w - w*)^2`` is therefore zero throughout the first task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedcl.methods.base import PLUGINS, Plugin, trainable_named
from fedcl.methods.boundaries import TaskBoundary


@PLUGINS.register("ewc")
class EWC(Plugin):
    name = "ewc"

    def __init__(self, strength: float = 100.0, decay: float = 1.0, fisher_samples: int = 256) -> None:
        super().__init__()
        if strength < 0 or not 0 <= decay <= 1 or fisher_samples < 1:
            raise ValueError("needs strength >= 0, 0 <= decay <= 1 and fisher_samples >= 1")
        self.strength, self.decay, self.fisher_samples = float(strength), float(decay), int(fisher_samples)
        self.boundary = TaskBoundary()
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.pending: dict[str, torch.Tensor] = {}

    def before_experience(self, learner, experience) -> None:
        if self.boundary.changed(experience.task_id) and self.pending:
            params = trainable_named(learner.model)
            for name, f in self.pending.items():
                self.fisher[name] = self.decay * self.fisher.get(name, torch.zeros_like(f)) + f
            self.anchor = {name: params[name].detach().clone() for name in self.fisher if name in params}

    def penalty(self, learner, batch) -> torch.Tensor | None:
        if not self.fisher or self.strength == 0:
            return None
        params = trainable_named(learner.model)
        terms = [(self.fisher[n].to(p.device) * (p - self.anchor[n].to(p.device)).pow(2)).sum() for n, p in params.items() if n in self.anchor]
        return 0.5 * self.strength * sum(terms) if terms else None

    def after_experience(self, learner, experience) -> None:
        self.pending = self.estimate_fisher(learner, experience)

    def estimate_fisher(self, learner, experience) -> dict[str, torch.Tensor]:
        """Per-sample diagonal empirical Fisher: (1/N) sum_n (d loss_n / d w)^2 over the first N <= ``fisher_samples``
        samples (one forward pass per mini-batch, one backward pass per sample)."""
        params = trainable_named(learner.model)
        if not params:
            return {}
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        mask = learner.train_mask(experience)
        seen = 0
        was_training = learner.model.training
        learner.model.eval()
        for inputs, labels, ids, are_features in learner.batches(experience, learner.settings.batch_size, shuffle=False):
            take = min(len(labels), self.fisher_samples - seen)
            features = inputs[:take] if are_features else learner.model.encode(inputs[:take], ids[:take])
            logits = learner.model.head(features, ids[:take]).masked_fill(~mask, float("-inf"))
            losses = F.cross_entropy(logits, labels[:take], reduction="none")
            for i in range(take):
                grads = torch.autograd.grad(losses[i], list(params.values()), retain_graph=i < take - 1, allow_unused=True)
                for (n, _), g in zip(params.items(), grads):
                    if g is not None:
                        fisher[n] += g.detach().pow(2)
            seen += take
            if seen >= self.fisher_samples:
                break
        learner.model.train(was_training)
        return {n: (f / max(seen, 1)).cpu() for n, f in fisher.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = self.boundary.state()
        for prefix, table in (("fisher", self.fisher), ("anchor", self.anchor), ("pending", self.pending)):
            out.update({f"{prefix}/{n}": t for n, t in table.items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.boundary.load(state)
        tables = {"fisher": {}, "anchor": {}, "pending": {}}
        for key, value in state.items():
            prefix, _, name = key.partition("/")
            if prefix in tables:
                tables[prefix][name] = value
        self.fisher, self.anchor, self.pending = tables["fisher"], tables["anchor"], tables["pending"]
