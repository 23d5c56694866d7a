"""A per-round progress hook: the command line sets a sink, the ServerApp reports each finished round.

Flower's simulation runs the ServerApp in a thread of the calling process (Ray and inline backends alike),
so a module-level sink reaches the console of ``fedcl simulate``. Without a sink, reporting does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

#: called with (round, total rounds, mean accuracy over tasks or None when the round was not evaluated)
RoundSink = Callable[[int, int, "float | None"], None]

_sink: RoundSink | None = None


def set_round_sink(sink: RoundSink | None) -> None:
    """Send every finished round to ``sink`` (None: stop)."""
    global _sink
    _sink = sink


def round_done(server_round: int, total_rounds: int, accuracies: list[float] | None) -> None:
    """Called by the server after each round with that round's per-task accuracies (None: not evaluated)."""
    if _sink is not None:
        _sink(server_round, total_rounds, sum(accuracies) / len(accuracies) if accuracies else None)
