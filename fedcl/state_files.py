"""Model state on disk as safetensors: tensors only, nothing executable to unpickle."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fedcl.backbones.loading import read_state_dict
from fedcl.outputs import write_atomic

#: the final global state (transform + head, plus any unfrozen backbone stages) of a federated run
GLOBAL_MODEL_FILE = "global_model.safetensors"


def save_state(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None,
               sync: bool = True) -> Path:
    """Write atomically (a crash never leaves a half-written file under ``path``); ``sync``: see :func:`write_atomic`."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), sync)


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A model state written by :func:`save_state` (e.g. a run's global model)."""
    return read_state_dict(path, "model state file")


#: what reading a missing, truncated or foreign file with :func:`read_state_and_metadata` raises
READ_ERRORS = (SafetensorError, OSError, ValueError)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a file written by :func:`save_state`, without its tensors; raises one of :data:`READ_ERRORS`."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def read_state_and_metadata(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the string metadata of a file written by :func:`save_state`; raises one of :data:`READ_ERRORS`."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
