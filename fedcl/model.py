"""The continual model: learned input transform -> frozen backbone -> head."""

from __future__ import annotations

import torch
from torch import nn

from fedcl.backbones.base import FrozenBackbone
from fedcl.heads.base import Head
from fedcl.transforms.base import InputTransform


class ContinualModel(nn.Module):
    """Images in [0, 1] -> logits over all classes.

    With a per-task transform and no task ids (class-/domain-incremental testing),
    the task is inferred: each seen task's transform is tried and the task whose
    prediction (restricted to its classes) is most confident wins.
    """

    def __init__(self, transform: InputTransform, backbone: FrozenBackbone, head: Head) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.head = head
        self.seen_tasks: list[int] = []
        #: state keys a client learns and a server aggregates (set by the builder from the method)
        self.exchanged_keys: list[str] = self.lightweight_keys()

    def lightweight_keys(self) -> list[str]:
        """Transform and head state keys: what travels when the backbone stays frozen."""
        return [f"{part}.{k}" for part in ("transform", "head") for k in getattr(self, part).state_dict()]

    def place(self, device: torch.device, channels_last: bool = False) -> ContinualModel:
        """Move the model to ``device`` (channels-last when asked), walking the backbone only when it is not placed
        there yet: a worker's shared frozen backbone already is, and walking its hundreds of modules for every
        client's model cost ~10 ms each (:meth:`FrozenBackbone.place`)."""
        layout = {"memory_format": torch.channels_last} if channels_last else {}
        self.transform.to(device, **layout)
        self.head.to(device, **layout)
        self.backbone.place(device, channels_last)
        return self

    def encode(self, images: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone(self.transform(images, task_ids))

    def forward(self, images: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.transform.per_task and task_ids is None:
            return self._infer_task_logits(images)
        return self.head(self.encode(images, task_ids), task_ids)

    def _infer_task_logits(self, images: torch.Tensor) -> torch.Tensor:
        tasks = self.seen_tasks or [0]
        best_logits, best_conf = None, None
        for t in tasks:
            ids = torch.full((images.shape[0],), t, dtype=torch.long, device=images.device)
            logits = self.head(self.encode(images, ids), ids)
            mask = torch.full_like(logits, float("-inf"))
            mask[:, self.head.task_classes[t]] = 0.0
            logits = logits + mask
            conf = logits.softmax(dim=1).amax(dim=1)
            if best_logits is None:
                best_logits, best_conf = logits, conf
            else:
                better = conf > best_conf
                best_logits = torch.where(better.unsqueeze(1), logits, best_logits)
                best_conf = torch.maximum(conf, best_conf)
        return best_logits

    def state_of(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """The state entries ``keys`` (live tensors), walking the backbone's modules only when a key is in it
        (the frozen backbone has hundreds of modules: walking it per client-round cost milliseconds)."""
        if any(k.startswith("backbone.") for k in keys):
            state = self.state_dict(keep_vars=True)
        else:
            state = {f"transform.{k}": v for k, v in self.transform.state_dict(keep_vars=True).items()}
            state.update({f"head.{k}": v for k, v in self.head.state_dict(keep_vars=True).items()})
        return {k: state[k].detach() for k in keys}

    def exchanged_state(self) -> dict[str, torch.Tensor]:
        """What a client learns and a server aggregates: transform + head, plus the backbone
        stages a method trains (:meth:`fedcl.methods.base.Method.exchanged_keys`)."""
        return self.state_of(self.exchanged_keys)

    def aggregation_kinds(self) -> dict[str, str]:
        kinds = {f"transform.{k}": v for k, v in self.transform.aggregation_kinds().items()}
        kinds.update({f"head.{k}": v for k, v in self.head.aggregation_kinds().items()})
        return {k: kinds.get(k, "examples") for k in self.exchanged_keys}
