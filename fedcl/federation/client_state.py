"""A client's own state on its own disk: plugin state (replay buffer, Fisher information,
old model) after each round it trained, so that a resumed run continues where it was.

The state never leaves the device. Files are ``<dir>/<partition>/round-<r>.safetensors``,
stamped with the run's token (so a later run never picks up an earlier run's state) and the server's attempt
(so a resumed run never picks up what the crashed attempt saved after the checkpoint it resumes from);
the two newest are kept, and, when the server says which round its last checkpoint is
(``keep_since``), also the newest state saved up to that round: the one a resumed run loads,
so that the client's state (gathered statistics, pending uploads) agrees with the checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from fedcl.errors import FedclError
from fedcl.state_files import READ_ERRORS, read_metadata, read_state_and_metadata, save_state

KEEP = 2
_NAME = re.compile(r"round-(\d+)\.safetensors$")


@dataclass(frozen=True)
class StateStamp:
    """Which saved states belong to this run: its token, the server's current attempt (a fresh one each time the
    server starts or resumes), and each earlier attempt's last round that the resumed checkpoint counts."""

    run_token: str
    attempt: str = ""
    earlier: tuple[tuple[str, int], ...] = ()

    def accepts(self, meta: Mapping[str, str], server_round: int) -> bool:
        if meta.get("run-token") != self.run_token:
            return False  # an earlier run's state
        attempt = meta.get("attempt", "")
        return attempt == self.attempt or any(attempt == a and server_round <= upto for a, upto in self.earlier)

    def config(self) -> dict:
        """The entries a train or collect message carries (a ConfigRecord's lists of str and of int)."""
        return {"run-token": self.run_token, "attempt": self.attempt, "earlier-attempts": [a for a, _ in self.earlier],
                "earlier-upto": [int(r) for _, r in self.earlier]}

    @classmethod
    def from_config(cls, config: Mapping) -> StateStamp:
        earlier = zip(list(config.get("earlier-attempts", [])), list(config.get("earlier-upto", [])), strict=True)
        return cls(str(config.get("run-token", "")), str(config.get("attempt", "")), tuple((str(a), int(r)) for a, r in earlier))


def _rounds(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.search(p.name)) and not p.is_dir()]
    return sorted(found)


def save_client_state(root: str | Path, partition_id: int, server_round: int, plugins: dict[str, dict[str, torch.Tensor]],
                      rounds_trained: int, stamp: StateStamp, keep_since: int | None = None, sync: bool = True) -> Path:
    """``sync=False`` (simulated clients, whose server syncs the machine's disk before each checkpoint): the
    file is not flushed one by one."""
    folder = Path(root) / str(partition_id)
    tensors = {f"{name}/{key}": value for name, state in plugins.items() for key, value in state.items()}
    meta = {"rounds-trained": str(rounds_trained), "run-token": stamp.run_token, "attempt": stamp.attempt}
    path = save_state(tensors, folder / f"round-{server_round}.safetensors", metadata=meta, sync=sync)
    saved = _rounds(folder)
    # what this attempt (and so every later one) may still load: the newest states it accepts, and the newest one
    # up to the checkpoint; another run's, or a crashed attempt's after the round it was resumed from, never again
    accepted = [(r, p) for r, p in saved if _accepted(stamp, p, r)]
    keep = {p for _, p in accepted[-KEEP:]}
    if keep_since is not None:
        keep.update([p for r, p in accepted if r <= keep_since][-1:])
    for _, old in saved:
        if old not in keep:
            old.unlink(missing_ok=True)
    return path


def _accepted(stamp: StateStamp, path: Path, server_round: int) -> bool:
    try:
        return stamp.accepts(read_metadata(path), server_round)
    except READ_ERRORS:
        return False  # torn (never loaded) or gone


def load_client_state(root: str | Path, partition_id: int, before_round: int, stamp: StateStamp,
                      skip_unreadable_after: int | None = None) -> tuple[dict[str, dict[str, torch.Tensor]], int] | None:
    """This run's newest state saved before ``before_round`` that ``stamp`` accepts: (plugin name -> state, rounds
    trained), or None.
    ``skip_unreadable_after`` (files written unflushed, :func:`save_client_state`, and the round of the server's
    last checkpoint, before which it synced the disk): an unreadable file saved after that round, which a machine
    crash can leave torn, is passed over for the one before it (the checkpoint being resumed never counted on it);
    an unreadable file saved up to that round was on disk, and is an error, as every unreadable file is when None."""
    for server_round, path in reversed([(r, p) for r, p in _rounds(Path(root) / str(partition_id)) if r < before_round]):
        try:
            tensors, meta = read_state_and_metadata(path)
        except READ_ERRORS as exc:
            if skip_unreadable_after is not None and server_round > skip_unreadable_after:
                continue
            raise FedclError(f"client {partition_id}: its saved state {path} is corrupt ({exc})") from None
        if not stamp.accepts(meta, server_round):
            continue  # an earlier run's state, or one a crashed attempt saved after the checkpoint being resumed
        plugins: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            name, _, tensor_key = key.partition("/")
            plugins.setdefault(name, {})[tensor_key] = tensor
        return plugins, int(meta.get("rounds-trained", 0))
    return None
