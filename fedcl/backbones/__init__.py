"""Backbone registry: ``create_backbone(name, ...)`` returns a :class:`FrozenBackbone`."""

from __future__ import annotations

from fedcl.backbones.base import BACKBONES, BackboneSpec, FrozenBackbone


def create_backbone(
    name: str = "efficientnet_lite0",
    *,
    pretrained: bool = True,
    weights: str | None = None,
) -> FrozenBackbone:
    """Build a frozen backbone by registered name.

    ``timm:<model>`` and ``torchvision:<model>`` reach any model of those libraries.
    ``weights`` is a local weights file (``.pth``/``.pt``/``.safetensors``);
    without it pretrained weights come from the library's cache or hub, and a
    missing offline copy raises a one-line :class:`~fedcl.errors.ConfigError`.
    """
    for prefix in ("timm:", "torchvision:"):
        if name.startswith(prefix):
            factory = BACKBONES.get(prefix)
            return factory(name[len(prefix) :], pretrained=pretrained, weights=weights)
    return BACKBONES.get(name)(pretrained=pretrained, weights=weights)


def backbone_names() -> list[str]:
    return BACKBONES.names()


# Registrations (one file per family).
from fedcl.backbones import efficientnet_lite0, timm_models, torchvision_models  # noqa: E402,F401

__all__ = ["BACKBONES", "BackboneSpec", "FrozenBackbone", "create_backbone", "backbone_names"]
