"""The round recorder: bytes, per-round statistics, refused replies and client accuracies,
with everything a resumed run needs as checkpoint state."""

from __future__ import annotations

import time
from logging import WARNING

from flwr.common import log

from fedcl.federation.accounting import ByteLedger


def _ints(d: dict) -> dict:
    """JSON turned int keys into strings; turn them back (nested)."""
    return {int(k): _ints(v) if isinstance(v, dict) and all(str(x).lstrip("-").isdigit() for x in v) else v for k, v in d.items()}


class RoundRecorder:
    def __init__(self, full_model_array_bytes: int) -> None:
        self.ledger = ByteLedger()
        self.full_model_array_bytes = full_model_array_bytes
        self.full_model_bytes: dict[int, int] = {}
        self.rejected: list[str] = []
        self.client_tasks: dict[int, dict[int, int]] = {}
        self.round_stats: dict[int, dict] = {}
        self.client_accuracy: dict[int, dict[int, float]] = {}
        self.sent: dict[int, dict[int, int]] = {}  # round -> node -> bytes of the training message (not checkpointed)
        self.sent_at: dict[int, float] = {}

    def reject(self, reason: str) -> None:
        """Record (in results.json) and log a reply that is left out of aggregation."""
        self.rejected.append(reason)
        log(WARNING, "fedcl: rejected: %s", reason)

    def add_full(self, server_round: int, overhead: int) -> None:
        """What the same message would weigh with the full model (backbone + head) instead of the exchanged state."""
        self.full_model_bytes[server_round] = self.full_model_bytes.get(server_round, 0) + overhead + self.full_model_array_bytes

    def sent_train(self, server_round: int, sizes: dict[int, int], array_bytes: int) -> None:
        self.sent[server_round] = dict(sizes)
        for size in sizes.values():
            self.add_full(server_round, size - array_bytes)
        self.sent_at[server_round] = time.perf_counter()

    def exchanged(self, server_round: int, pid: int, node: int, up: int) -> None:
        """A reply of ``up`` bytes from client ``pid`` to the message sent to ``node``."""
        self.ledger.record("up", server_round, pid, up)
        self.ledger.record("down", server_round, pid, self.sent.get(server_round, {}).get(node, 0))

    def elapsed(self, server_round: int) -> float:
        return round(time.perf_counter() - self.sent_at.get(server_round, time.perf_counter()), 3)

    def state_dict(self) -> dict:
        return {"ledger": {"down": self.ledger.down, "up": self.ledger.up}, "full_model_bytes": self.full_model_bytes,
                "rejected": self.rejected, "client_tasks": self.client_tasks, "round_stats": self.round_stats,
                "client_accuracy": self.client_accuracy}

    def load_state_dict(self, state: dict) -> None:
        for direction in ("down", "up"):
            book = getattr(self.ledger, direction)
            book.clear()
            book.update(_ints(state["ledger"][direction]))
        self.full_model_bytes = _ints(state["full_model_bytes"])
        self.rejected = list(state["rejected"])
        self.client_tasks = _ints(state["client_tasks"])
        self.round_stats = {int(k): v for k, v in state["round_stats"].items()}
        self.client_accuracy = _ints(state["client_accuracy"])
