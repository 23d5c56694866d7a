"""Backbones from timm: named shortcuts and ``timm:<any model>``."""

from __future__ import annotations

from fedcl.backbones.base import BACKBONES, BackboneSpec, FrozenBackbone
from fedcl.backbones.loading import feature_dim_of, load_weights, offline_weights_error, split_stages
from fedcl.deferred_dynamo import import_vision

SHORT_NAMES = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "mobilenetv3": "mobilenetv3_large_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
    "vit_tiny": "vit_tiny_patch16_224",
}


def build_timm(arch: str, *, pretrained: bool, weights: str | None, name: str) -> FrozenBackbone:
    timm = import_vision("timm")  # here, not at import: timm pulls torch and torchvision (3 s), which listing names does not need

    kwargs = {"dynamic_img_size": True} if arch.startswith(("vit", "deit")) else {}
    try:
        model = timm.create_model(arch, pretrained=pretrained and not weights, num_classes=0, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            from fedcl.errors import ConfigError

            raise ConfigError(f"unknown timm model '{arch}'") from None
        raise offline_weights_error(name, exc) from None
    except Exception as exc:  # network/hub errors when offline
        raise offline_weights_error(name, exc) from None
    if weights:
        load_weights(model, weights, name)
    cfg = model.pretrained_cfg
    spec = BackboneSpec(name, feature_dim_of(model), cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]))
    return FrozenBackbone(model, spec, split_stages(model))


def _register(short: str, arch: str) -> None:
    @BACKBONES.register(short)
    def factory(*, pretrained: bool = True, weights: str | None = None) -> FrozenBackbone:
        return build_timm(arch, pretrained=pretrained, weights=weights, name=short)


for _short, _arch in SHORT_NAMES.items():
    _register(_short, _arch)


@BACKBONES.register("timm:")
def any_timm(arch: str, *, pretrained: bool = True, weights: str | None = None) -> FrozenBackbone:
    return build_timm(arch, pretrained=pretrained, weights=weights, name=f"timm:{arch}")
