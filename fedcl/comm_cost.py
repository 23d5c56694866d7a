"""What-if communication cost from real parameter counts: what a client sends per round
for each backbone x transform x head size x quantisation, and the full fine-tuning equivalent.

Sizes are exact wire sizes of the encoded Flower ``ArrayRecord`` (the same encoding the
federation uses, :mod:`fedcl.federation.codec`), one direction, one client, one round.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import pandas as pd
import torch

from fedcl.federation.accounting import message_bytes
from fedcl.federation.codec import encode

DEFAULT_BACKBONES = ("efficientnet_lite0", "mobilenetv3", "resnet18", "resnet50", "vit_tiny")
DEFAULT_TRANSFORMS = ("none", "additive", "border", "color", "residual_conv")
UPLINKS_MBPS = (1.0, 10.0, 100.0)


@functools.lru_cache(maxsize=16)
def backbone_shapes(name: str, image_size: int) -> tuple[int, tuple[tuple[str, tuple[int, ...], torch.dtype], ...]]:
    """(feature dim, state shapes) of a registered backbone, built without pretrained weights."""
    from fedcl.backbones import create_backbone

    backbone = create_backbone(name, pretrained=False)
    return backbone.feature_dim, tuple((k, tuple(v.shape), v.dtype) for k, v in backbone.model.state_dict().items())


def transform_state(name: str, image_size: int, per_task: bool = False, num_tasks: int = 1) -> dict[str, torch.Tensor]:
    from fedcl.transforms import create_transform

    state = create_transform(name, image_size, per_task=per_task and name != "none", num_tasks=num_tasks).state_dict()
    return {k: _filled(tuple(v.shape), v.dtype, 100 + i) for i, (k, v) in enumerate(state.items())}


def _filled(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Distinct random values: Flower stores identical arrays once, so zeros would undercount."""
    if not dtype.is_floating_point:
        return torch.full(shape, seed, dtype=dtype)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def linear_head_state(feature_dim: int, num_classes: int) -> dict[str, torch.Tensor]:
    return {"head.fc.weight": _filled((num_classes, feature_dim), torch.float32, 1), "head.fc.bias": _filled((num_classes,), torch.float32, 2)}


def encoded_bytes(state: dict[str, torch.Tensor], quantization: str = "none") -> int:
    return message_bytes(encode(state, quantization)) if state else 0


def what_if(
    backbones: Iterable[str] = DEFAULT_BACKBONES,
    transforms: Iterable[str] = DEFAULT_TRANSFORMS,
    num_classes: Iterable[int] = (10, 100),
    quantizations: Iterable[str] = ("none", "fp16", "int8"),
    image_size: int = 224,
    uplinks_mbps: Iterable[float] = UPLINKS_MBPS,
) -> pd.DataFrame:
    """One row per backbone x transform x classes x quantisation: trainable parameters, MB per
    client and round (one way), the full fine-tuning MB, their ratio, and upload seconds per link."""
    rows = []
    for backbone in backbones:
        feature_dim, shapes = backbone_shapes(backbone, image_size)
        backbone_state = {k: _filled(s, d, i) for i, (k, s, d) in enumerate(shapes)}
        for classes in num_classes:
            head = linear_head_state(feature_dim, classes)
            full = {**{f"backbone.{k}": v for k, v in backbone_state.items()}, **head}
            for q in quantizations:
                full_bytes = encoded_bytes(full, q)
                for transform in transforms:
                    light = {**{f"transform.{k}": v for k, v in transform_state(transform, image_size).items()}, **head}
                    light_bytes = encoded_bytes(light, q)
                    row = {
                        "backbone": backbone, "transform": transform, "classes": classes, "quantization": q,
                        "trainable_params": sum(v.numel() for v in light.values()),
                        "mb_per_round": light_bytes / 1e6, "full_ft_mb_per_round": full_bytes / 1e6,
                        "fraction_of_full": light_bytes / full_bytes,
                    }
                    for mbps in uplinks_mbps:
                        row[f"upload_s_at_{mbps:g}mbps"] = upload_seconds(light_bytes, mbps)
                        row[f"full_ft_upload_s_at_{mbps:g}mbps"] = upload_seconds(full_bytes, mbps)
                    rows.append(row)
    return pd.DataFrame(rows)


def upload_seconds(nbytes: float, mbps: float) -> float:
    return nbytes * 8 / (mbps * 1e6)


def campaign_mb(mb_per_client_round_one_way: float, clients: int, rounds: int, both_ways: bool = True) -> float:
    """Total MB a campaign of ``clients`` x ``rounds`` moves (down and up when ``both_ways``)."""
    return mb_per_client_round_one_way * clients * rounds * (2 if both_ways else 1)


def crossover_mb(cheap: pd.DataFrame, expensive: pd.DataFrame) -> float | None:
    """The cumulative MB at which the ``expensive`` curve first reaches the best accuracy the ``cheap``
    curve ever reaches (columns ``cumulative_mb`` and ``accuracy``); None if it never does."""
    target = cheap["accuracy"].max()
    reached = expensive[expensive["accuracy"] >= target]
    return float(reached["cumulative_mb"].iloc[0]) if len(reached) else None


def pareto_front(points: pd.DataFrame, cost: str = "total_mb", value: str = "final_acc") -> pd.DataFrame:
    """Rows not beaten by another row with lower-or-equal cost and higher value, sorted by cost."""
    ordered = points.sort_values([cost, value], ascending=[True, False])
    best, keep = -float("inf"), []
    for idx, r in ordered.iterrows():
        if r[value] > best:
            keep.append(idx)
            best = r[value]
    return ordered.loc[keep]
