"""Server checkpoints: one safetensors file per run folder, rewritten atomically after every k rounds.

Tensors (global state, server-optimiser moments) are stored as safetensors; everything
else (round, config, byte ledger, per-round statistics, accuracies) as JSON in the
file's metadata. Nothing is unpickled when a checkpoint is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedcl.errors import FedclError
from fedcl.guards import first_non_finite
from fedcl.outputs import staged
from fedcl.state_files import READ_ERRORS, read_state_and_metadata, save_state

CHECKPOINT_FILE = "checkpoint.safetensors"
#: where a run in progress writes its checkpoints (it becomes ``CHECKPOINT_FILE`` when the run succeeds)
STAGED_CHECKPOINT_FILE = staged(CHECKPOINT_FILE).name
FORMAT = "fedcl-checkpoint/1"
#: settings that change how a run executes, not what it computes: they may differ on resume
EXECUTION_KEYS = frozenset({
    "federation.resume", "federation.backend", "federation.ray_address", "federation.ray_num_cpus",
    "federation.client_num_cpus", "federation.client_num_gpus", "federation.node_wait_s", "federation.round_timeout_s",
    "train.num_threads",
})


class CheckpointError(FedclError):
    """A checkpoint that is missing, corrupt, or from another run."""


@dataclass
class Checkpoint:
    server_round: int
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]  # "<group>/<key>" -> tensor
    state: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable server state

    def group(self, name: str) -> dict[str, torch.Tensor]:
        prefix = name + "/"
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key not in ("options", "plugins"):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Settings (dotted keys) that differ, ignoring :data:`EXECUTION_KEYS`."""
    a, b = flatten(saved), flatten(current)
    return [k for k in sorted(set(a) | set(b)) if k not in EXECUTION_KEYS and a.get(k) != b.get(k)]


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    meta = {"format": FORMAT, "round": str(ckpt.server_round), "config": json.dumps(ckpt.config), "state": json.dumps(ckpt.state)}
    return save_state(ckpt.tensors, path, metadata=meta)


def resume_path(out: str | Path) -> Path:
    """The checkpoint ``--resume`` continues from: an interrupted run's staged one, else the last finished run's."""
    out = Path(out)
    return out / STAGED_CHECKPOINT_FILE if (out / STAGED_CHECKPOINT_FILE).is_file() else out / CHECKPOINT_FILE


def _parse_metadata(path: Path, meta: dict[str, str], last_round: int | None) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(round, config, server state) from the metadata; damaged or absurd values raise :class:`CheckpointError`."""
    try:
        saved_config = json.loads(meta["config"])
        state = json.loads(meta["state"])
        server_round = int(meta["round"])
    except (KeyError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path} has damaged metadata ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(saved_config, dict) or not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} has damaged metadata (config and state must be JSON objects)")
    if server_round < 1 or (last_round is not None and server_round > last_round):
        rounds = f"1..{last_round}" if last_round is not None else "1 or more"
        raise CheckpointError(f"checkpoint {path} claims round {str(server_round)[:30]}, outside this run's rounds {rounds}")
    return server_round, saved_config, state


def load_checkpoint(path: str | Path, config: dict[str, Any], last_round: int | None = None) -> Checkpoint:
    """Read and check a checkpoint against the current config (and its round against ``last_round``);
    every failure names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: no checkpoint at {path} (run without federation.resume first)")
    try:
        tensors, meta = read_state_and_metadata(path)
    except READ_ERRORS as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a fedcl checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    server_round, saved_config, state = _parse_metadata(path, meta, last_round)
    bad = first_non_finite(tensors)
    if bad:
        raise CheckpointError(f"checkpoint {path} holds {bad}; it cannot be resumed (start a new run)")
    differences = config_differences(saved_config, config)
    if differences:
        shown = "; ".join(f"{k}: {flatten(saved_config).get(k)!r} in the checkpoint, {flatten(config).get(k)!r} now" for k in differences[:3])
        raise CheckpointError(f"checkpoint {path} belongs to a run with other settings ({shown}); resume with the same config or use another output folder")
    return Checkpoint(server_round, saved_config, tensors, state)


def check_state(ckpt: Checkpoint, group: str, reference: dict[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors of ``group``, checked key by key against the model's state."""
    state = ckpt.group(group)
    if set(state) != set(reference):
        detail = sorted(set(reference) ^ set(state))[:3]
        raise CheckpointError(f"checkpoint {path} does not match the model: {group} keys differ ({detail})")
    for key, ref in reference.items():
        if state[key].shape != ref.shape or state[key].dtype != ref.dtype:
            raise CheckpointError(f"checkpoint {path} does not match the model: '{key}' is {tuple(state[key].shape)} "
                                  f"{state[key].dtype}, the model has {tuple(ref.shape)} {ref.dtype}")
    return state
