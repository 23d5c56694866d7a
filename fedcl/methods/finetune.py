"""Full and partial fine-tuning: the backbone (or its last stages) trains with the head."""

from __future__ import annotations

from fedcl.methods.base import METHODS, Method, freeze_transform, head_group


@METHODS.register("finetune")
class FullFinetune(Method):
    """Every backbone weight trains (BatchNorm statistics too): the expensive reference."""

    name = "finetune"
    uses_transform = False
    trains_backbone = True
    last_stages: int | None = None

    def configure(self, model, settings):
        freeze_transform(model)
        params = model.backbone.unfreeze(self.last_stages)
        return [{"params": params, "lr": settings.backbone_lr, "name": "backbone"}] + head_group(model, settings)

    def exchanged_keys(self, model):
        stages = model.backbone.stage_state_keys(self.last_stages)
        return [k for k in model.state_dict() if not k.startswith("backbone.") or k.removeprefix("backbone.") in stages]


@METHODS.register("partial_finetune")
class PartialFinetune(FullFinetune):
    """The last ``stages`` stages of the backbone train with the head."""

    name = "partial_finetune"

    def __init__(self, stages: int = 1) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError("partial_finetune stages must be at least 1")
        self.last_stages = stages
