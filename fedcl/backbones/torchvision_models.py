"""Backbones from torchvision: ``torchvision:<model>`` (e.g. ``torchvision:resnet18``)."""

from __future__ import annotations

from torch import nn

from fedcl.backbones.base import BACKBONES, BackboneSpec, FrozenBackbone
from fedcl.backbones.loading import feature_dim_of, load_weights, offline_weights_error, split_stages
from fedcl.deferred_dynamo import import_vision
from fedcl.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CLASSIFIER_ATTRS = ("fc", "classifier", "heads", "head")


@BACKBONES.register("torchvision:")
def any_torchvision(arch: str, *, pretrained: bool = True, weights: str | None = None) -> FrozenBackbone:
    torchvision = import_vision("torchvision")  # here, not at import (seconds)

    name = f"torchvision:{arch}"
    if arch not in torchvision.models.list_models():
        raise ConfigError(f"unknown torchvision model '{arch}'")
    try:
        model = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained and not weights else None)
    except Exception as exc:  # download failures when offline
        raise offline_weights_error(name, exc) from None
    for attr in _CLASSIFIER_ATTRS:
        if hasattr(model, attr):
            setattr(model, attr, nn.Identity())
            break
    if weights:
        load_weights(model, weights, name)
    spec = BackboneSpec(name, feature_dim_of(model, 224), 224, IMAGENET_MEAN, IMAGENET_STD)
    return FrozenBackbone(model, spec, split_stages(model))
