"""A client's summed statistics that the server has not confirmed yet (exact federated sums).

A statistical head's 'sum' state travels as a change: what the client gathered since its last
confirmed upload. The client keeps that change as *pending* until the server says, in its next
message to that client (``stats-accepted-round``), that it added the reply of the round the
change was last sent in; a lost, late or rejected reply is therefore sent again (with anything
gathered since), and an accepted one never twice. The state is plugin state, so it is kept in
``context.state`` and on the client's disk with the rest (:mod:`fedcl.federation.client_state`).
"""

from __future__ import annotations

import torch

from fedcl.methods.base import Plugin

SENT_ROUND = "sent_round"
CHANGE_PREFIX = "change/"


class PendingStatistics(Plugin):
    """The unconfirmed change of each 'sum' key (float64) and the round it was last sent in (0: never)."""

    name = "pending_statistics"

    def __init__(self) -> None:
        super().__init__()
        self.changes: dict[str, torch.Tensor] = {}
        self.sent_round = 0

    def confirm(self, accepted_round: int) -> None:
        """The server added this client's statistics of ``accepted_round``: what was sent then is in the global sums."""
        if self.sent_round and accepted_round >= self.sent_round:
            self.changes, self.sent_round = {}, 0

    def add(self, changes: dict[str, torch.Tensor]) -> None:
        """Newly gathered statistics (ignored when all zero: nothing new)."""
        if not any(bool(c.any()) for c in changes.values()):
            return
        for key, change in changes.items():
            change = change.detach().cpu().double()
            self.changes[key] = self.changes[key] + change if key in self.changes else change

    def send(self, server_round: int) -> dict[str, torch.Tensor]:
        """The pending changes, now (re)sent in ``server_round``; empty when there is nothing to send."""
        if self.changes:
            self.sent_round = server_round
        return dict(self.changes)

    def state_dict(self) -> dict[str, torch.Tensor]:
        # never empty: a cleared state must replace the saved one (an empty plugin state is not saved)
        return {SENT_ROUND: torch.tensor([self.sent_round], dtype=torch.long),
                **{CHANGE_PREFIX + k: v for k, v in self.changes.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sent_round = int(state[SENT_ROUND][0]) if SENT_ROUND in state else 0
        self.changes = {k[len(CHANGE_PREFIX):]: v.double() for k, v in state.items() if k.startswith(CHANGE_PREFIX)}
