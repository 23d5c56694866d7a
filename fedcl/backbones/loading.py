"""Shared helpers for building backbones: stages, checkpoints, error messages."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fedcl.errors import ConfigError, DataError

_BLOCK_CONTAINERS = ("blocks", "stages", "layers", "features")


def split_stages(model: nn.Module) -> list[nn.Module]:
    """Order a model's parameterised children from input to output.

    Block containers (``blocks``, ``stages``...) are expanded; everything before the
    first block joins a stem stage and everything after the last block joins the last
    stage, so "the last k stages" always includes the model's final layers.
    """
    children: list[tuple[nn.Module, bool]] = []
    for name, child in model.named_children():
        if name in _BLOCK_CONTAINERS and isinstance(child, nn.Sequential):
            children.extend((block, True) for block in child)
        elif name.startswith("layer") and name[5:].isdigit():
            children.append((child, True))
        elif any(True for _ in child.parameters()):
            children.append((child, False))
    block_idx = [i for i, (_, is_block) in enumerate(children) if is_block]
    if not block_idx:
        return [model]
    first, last = block_idx[0], block_idx[-1]
    stem = [m for m, _ in children[:first]]
    tail = [m for m, _ in children[last + 1 :]]
    stages: list[nn.Module] = []
    if stem:
        stages.append(nn.ModuleList(stem))
    stages.extend(m for m, _ in children[first:last])
    stages.append(nn.ModuleList([children[last][0], *tail]))
    return stages


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or unsafe file
        raise DataError(f"cannot read checkpoint {path}: {exc.__class__.__name__}: {exc}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"checkpoint {path} does not hold a state dict of tensors")
    return state


def load_checkpoint(model: nn.Module, path: str | Path, name: str) -> None:
    """Load a local checkpoint into a feature extractor, ignoring classifier weights."""
    state = read_state_dict(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own}
    mismatched = [k for k, v in usable.items() if v.shape != own[k].shape]
    missing = [k for k in own if k not in usable]
    if mismatched or missing:
        detail = f"shape mismatch at {mismatched[:3]}" if mismatched else f"missing {missing[:3]}"
        raise DataError(f"checkpoint {path} does not fit backbone '{name}': {detail}")
    model.load_state_dict(usable)


def offline_weights_error(name: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"pretrained weights for backbone '{name}' are not available ({exc.__class__.__name__}); "
        "put them in the library cache, pass model.weights=PATH, or set model.pretrained=false"
    )


def feature_dim_of(model: nn.Module, size: int = 64) -> int:
    """The width of the pooled features, measured by one dry forward pass."""
    with torch.no_grad():
        return int(model.eval()(torch.zeros(1, 3, size, size)).shape[-1])
