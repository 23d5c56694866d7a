"""A client's own state on its own disk: plugin state (replay buffer, Fisher information,
old model) after each round it trained, so that a resumed run continues where it was.

The state never leaves the device. Files are ``<dir>/<partition>/round-<r>.safetensors``,
stamped with the run's token (so a later run never picks up an earlier run's state);
the two newest are kept, and, when the server says which round its last checkpoint is
(``keep_since``), also the newest state saved up to that round: the one a resumed run loads,
so that the client's state (gathered statistics, pending uploads) agrees with the checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from fedcl.errors import FedclError
from fedcl.state_files import READ_ERRORS, read_state_and_metadata, save_state

KEEP = 2
_NAME = re.compile(r"round-(\d+)\.safetensors$")


def _rounds(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.search(p.name))]
    return sorted(found)


def save_client_state(root: str | Path, partition_id: int, server_round: int, plugins: dict[str, dict[str, torch.Tensor]],
                      rounds_trained: int, run_token: str, keep_since: int | None = None, sync: bool = True) -> Path:
    """``sync=False`` (simulated clients, whose server syncs the machine's disk before each checkpoint): the
    file is not flushed one by one."""
    folder = Path(root) / str(partition_id)
    tensors = {f"{name}/{key}": value for name, state in plugins.items() for key, value in state.items()}
    meta = {"rounds-trained": str(rounds_trained), "run-token": run_token}
    path = save_state(tensors, folder / f"round-{server_round}.safetensors", metadata=meta, sync=sync)
    saved = _rounds(folder)
    resumable = max((r for r, _ in saved if r <= keep_since), default=None) if keep_since is not None else None
    for r, old in saved[:-KEEP]:
        if resumable is None or r < resumable:
            old.unlink(missing_ok=True)
    return path


def load_client_state(root: str | Path, partition_id: int, before_round: int, run_token: str, skip_unreadable: bool = False
                      ) -> tuple[dict[str, dict[str, torch.Tensor]], int] | None:
    """This run's newest state saved before ``before_round``: (plugin name -> state, rounds trained), or None.
    ``skip_unreadable`` (files written unflushed, :func:`save_client_state`): a file a machine crash left torn is
    passed over for the one before it. Such a file was written after the server's last sync, so the checkpoint
    being resumed never counted on it (a reply that arrived after its round closed); a file that was flushed
    and is unreadable is an error."""
    for _, path in reversed([(r, p) for r, p in _rounds(Path(root) / str(partition_id)) if r < before_round]):
        try:
            tensors, meta = read_state_and_metadata(path)
        except READ_ERRORS as exc:
            if skip_unreadable:
                continue
            raise FedclError(f"client {partition_id}: its saved state {path} is corrupt ({exc})") from None
        if meta.get("run-token") != run_token:
            continue  # an earlier run's state
        plugins: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            name, _, tensor_key = key.partition("/")
            plugins.setdefault(name, {})[tensor_key] = tensor
        return plugins, int(meta.get("rounds-trained", 0))
    return None
