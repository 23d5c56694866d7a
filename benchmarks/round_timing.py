"""Per-round wall times of a Flower strategy, so that the first round (Ray workers starting, caches
filling) is reported apart from the steady rounds that follow."""

from __future__ import annotations

import time

from flwr.serverapp.strategy import FedAvg


class TimedFedAvg(FedAvg):
    """FedAvg that notes when each round's aggregation ends."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.perf_counter()
        self.ends: list[float] = []

    def aggregate_train(self, server_round, replies):
        out = super().aggregate_train(server_round, replies)
        self.ends.append(time.perf_counter())
        return out

    def round_seconds(self) -> list[float]:
        marks = [self.started, *self.ends]
        return [b - a for a, b in zip(marks, marks[1:])]


def first_and_steady(seconds: list[float]) -> tuple[float, float]:
    """(first round, mean of the later rounds)."""
    rest = seconds[1:] or seconds
    return seconds[0], sum(rest) / len(rest)
