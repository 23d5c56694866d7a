"""A client's summed statistics that the server has not confirmed yet (exact federated sums).

A statistical head's 'sum' state travels as a change: what the client gathered since its last
confirmed upload. The client keeps that change as *pending* until the server says, in its next
message to that client (``stats-accepted-round``), that it added the reply of the round the
change was last sent in; a lost, late or rejected reply is therefore sent again (with anything
gathered since), and an accepted one never twice. The state is plugin state, so it is kept in
``context.state`` and on the client's disk with the rest (:mod:`fedcl.federation.client_state`).

A Gram change gathered from few samples is kept as its factor R (RᵀR = the change, :mod:`fedcl.federation.factors`):
new rows are folded in by factoring [R; rows] again, and the change becomes packed once the factor would
be larger than the packed form or a change comes without its rows.
"""

from __future__ import annotations

import torch

from fedcl.federation.factors import factor_gram, gram_factor, max_factor_rows
from fedcl.methods.base import Plugin

SENT_ROUND = "sent_round"
CHANGE_PREFIX = "change/"
FACTOR_PREFIX = "factor/"


class PendingStatistics(Plugin):
    """The unconfirmed change of each 'sum' key (float64), packed (``changes``) or as a Gram factor
    (``factors``, never both for one key), and the round it was last sent in (0: never)."""

    name = "pending_statistics"

    def __init__(self) -> None:
        super().__init__()
        self.changes: dict[str, torch.Tensor] = {}
        self.factors: dict[str, torch.Tensor] = {}
        self.sent_round = 0

    def confirm(self, accepted_round: int) -> None:
        """The server added this client's statistics of ``accepted_round``: what was sent then is in the global sums."""
        if self.sent_round and accepted_round >= self.sent_round:
            self.changes, self.factors, self.sent_round = {}, {}, 0

    def add(self, changes: dict[str, torch.Tensor], rows: dict[str, torch.Tensor] | None = None) -> None:
        """Newly gathered statistics (ignored when all zero: nothing new). ``rows[key]``, where given, are the
        vectors whose Gram matrix is the change of ``key`` (``changes`` may then leave that key out): kept as a
        factor while it is smaller."""
        rows = rows or {}
        if not any(bool(c.any()) for c in changes.values()) and not any(len(r) for r in rows.values()):
            return
        for key in [*changes, *(k for k in rows if k not in changes)]:
            if key in rows and key not in self.changes:
                self._add_rows(key, rows[key].detach().cpu().double())
                continue
            if key in self.factors:
                self._pack(key)
            change = changes[key] if key in changes else factor_gram([rows[key]], rows[key].shape[1])
            self._add_packed(key, change.detach().cpu().double())

    def _add_packed(self, key: str, change: torch.Tensor) -> None:
        self.changes[key] = self.changes[key] + change if key in self.changes else change

    def _pack(self, key: str) -> None:
        """The factor of ``key`` becomes (part of) its packed change."""
        factor = self.factors.pop(key)
        self._add_packed(key, factor_gram([factor], factor.shape[1]))

    def _add_rows(self, key: str, rows: torch.Tensor) -> None:
        old = self.factors.pop(key, None)
        factor = gram_factor(rows if old is None else torch.cat([old, rows]))
        if len(factor) > max_factor_rows(rows.shape[1]):
            self._add_packed(key, factor_gram([factor], rows.shape[1]))
        elif len(factor):
            self.factors[key] = factor

    def send(self, server_round: int, factors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(packed changes, factors) pending, now (re)sent in ``server_round``; both empty when there is nothing
        to send. ``factors=False`` (the server does not take them): every change packed."""
        if not factors:
            for key in list(self.factors):
                self._pack(key)
        if self.changes or self.factors:
            self.sent_round = server_round
        return dict(self.changes), dict(self.factors)

    def state_dict(self) -> dict[str, torch.Tensor]:
        # never empty: a cleared state must replace the saved one (an empty plugin state is not saved)
        return {SENT_ROUND: torch.tensor([self.sent_round], dtype=torch.long),
                **{CHANGE_PREFIX + k: v for k, v in self.changes.items()},
                **{FACTOR_PREFIX + k: v for k, v in self.factors.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.sent_round = int(state[SENT_ROUND][0]) if SENT_ROUND in state else 0
        self.changes = {k[len(CHANGE_PREFIX):]: v.double() for k, v in state.items() if k.startswith(CHANGE_PREFIX)}
        self.factors = {k[len(FACTOR_PREFIX):]: v.double() for k, v in state.items() if k.startswith(FACTOR_PREFIX)}
