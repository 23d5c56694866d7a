"""Input shifts that define the domains of domain-incremental streams.

A domain is a string ``kind`` or ``kind:strength`` (e.g. ``rotate:45``, ``noise:0.3``);
shifts are deterministic given the seed and return uint8 images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fedcl.errors import ConfigError

DEFAULT_DOMAINS = ["none", "rotate:45", "noise:0.25", "blur:1.5", "color:0.8", "rotate:90", "invert", "noise:0.5"]


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    angle = math.radians(degrees)
    theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]])
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2 * sigma)))
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _color(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    tint = 1.0 - strength * torch.rand(3, generator=generator)
    return x * tint.view(1, 3, 1, 1)


def parse_domain(domain: str) -> tuple[str, float | None]:
    kind, _, value = domain.partition(":")
    if kind not in {"none", "rotate", "noise", "blur", "color", "invert"}:
        raise ConfigError(f"unknown domain shift '{domain}'; use none, rotate:DEG, noise:STD, blur:SIGMA, color:STRENGTH, invert")
    try:
        return kind, float(value) if value else None
    except ValueError:
        raise ConfigError(f"domain shift '{domain}': strength must be a number") from None


def apply_shift(images: torch.Tensor, domain: str, seed: int = 0) -> torch.Tensor:
    """Apply a named shift to uint8 images (N, C, H, W); returns uint8 images."""
    kind, value = parse_domain(domain)
    if kind == "none":
        return images
    generator = torch.Generator().manual_seed(seed)
    x = images.float() / 255.0
    if kind == "rotate":
        x = _rotate(x, value if value is not None else 45.0)
    elif kind == "noise":
        x = x + (value if value is not None else 0.25) * torch.randn(x.shape, generator=generator)
    elif kind == "blur":
        x = _blur(x, value if value is not None else 1.5)
    elif kind == "color":
        x = _color(x, value if value is not None else 0.8, generator)
    elif kind == "invert":
        x = 1.0 - x
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)
