"""Input tuning (the default): learn the input transform and the head; the backbone stays frozen."""

from __future__ import annotations

from fedcl.methods import METHODS
from fedcl.methods.base import Method, head_group


@METHODS.register("input_tuning")
class InputTuning(Method):
    name = "input_tuning"

    def configure(self, model, settings):
        transform = [p for p in model.transform.parameters()]
        for p in transform:
            p.requires_grad_(True)
        groups = [{"params": transform, "lr": settings.lr, "name": "transform"}] if transform else []
        return groups + head_group(model, settings)
