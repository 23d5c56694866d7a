"""Shared helpers for building backbones: stages, weights files (``model.weights``), error messages."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from fedcl.errors import ConfigError, DataError
from fedcl.guards import first_non_finite

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


def _load_tensors(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on pickle protocols would add lines to a one-line error
        return torch.load(path, map_location="cpu", weights_only=True)


def _unreadable(path: Path, exc: Exception, what: str) -> DataError:
    """One line, without torch's advice to unpickle (``weights_only=False`` runs whatever the file holds)."""
    if path.suffix == ".safetensors":
        why = f"not a valid safetensors file ({exc.__class__.__name__})"
    elif zipfile.is_zipfile(path):
        why = "a torch file that holds Python objects other than tensors, which fedcl never unpickles; save a plain state dict or safetensors"
    else:
        why = "neither a safetensors file nor a torch file of plain tensors (fedcl never unpickles other objects)"
    return DataError(f"cannot read {what} {path}: {why}")


def read_state_dict(path: str | Path, what: str = "weights file") -> dict[str, torch.Tensor]:
    """Read a file of tensors (``what`` names it in errors) without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        state = _load_tensors(path)
    except Exception as exc:  # corrupt or unsafe file
        raise _unreadable(path, exc, what) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DataError(f"{what} {path} does not hold a state dict of tensors")
    return state


def load_weights(model: nn.Module, path: str | Path, name: str) -> None:
    """Load a local weights file into a feature extractor, ignoring classifier weights; refuses non-finite weights."""
    state = read_state_dict(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own}
    mismatched = [k for k, v in usable.items() if v.shape != own[k].shape]
    missing = [k for k in own if k not in usable]
    if mismatched or missing:
        detail = f"shape mismatch at {mismatched[:3]}" if mismatched else f"missing {missing[:3]}"
        raise DataError(f"weights file {path} does not fit backbone '{name}': {detail}")
    bad = first_non_finite(usable)
    if bad:
        raise DataError(f"weights file {path} holds {bad}; a backbone must have finite weights")
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
