"""Per-client task streams: task order and task boundaries, derived from the seed and partition id."""

from __future__ import annotations

import random


class TaskSchedule:
    """Which task a client trains on in each round (rounds are 1-based).

    Nominally task k occupies rounds ``k*R+1 .. (k+1)*R`` (R = rounds_per_task). Each
    client's boundary into task k>0 lags by 0..jitter rounds (at most R-1), drawn
    from ``(seed, partition_id)``, so clients switch tasks at different rounds.
    With ``per_client`` order each client sees the tasks in its own permutation.
    """

    def __init__(self, num_tasks: int, rounds_per_task: int, jitter: int = 0, task_order: str = "shared", seed: int = 0) -> None:
        self.num_tasks = num_tasks
        self.rounds_per_task = rounds_per_task
        self.jitter = min(jitter, rounds_per_task - 1)
        self.task_order = task_order
        self.seed = seed

    @property
    def num_rounds(self) -> int:
        return self.num_tasks * self.rounds_per_task

    def order(self, partition_id: int) -> list[int]:
        tasks = list(range(self.num_tasks))
        if self.task_order == "per_client":
            random.Random(f"{self.seed}-order-{partition_id}").shuffle(tasks)
        return tasks

    def starts(self, partition_id: int) -> list[int]:
        """First round of each position in the client's stream."""
        rng = random.Random(f"{self.seed}-boundary-{partition_id}")
        return [1] + [k * self.rounds_per_task + 1 + rng.randint(0, self.jitter) for k in range(1, self.num_tasks)]

    def position(self, partition_id: int, server_round: int) -> int:
        starts = self.starts(partition_id)
        return max(k for k, s in enumerate(starts) if s <= server_round)

    def task(self, partition_id: int, server_round: int) -> int:
        return self.order(partition_id)[self.position(partition_id, server_round)]

    def seen_tasks(self, partition_id: int, server_round: int) -> list[int]:
        return self.order(partition_id)[: self.position(partition_id, server_round) + 1]

    def boundary_rounds(self, num_clients: int) -> list[int]:
        """For each stream position k, the round after which every client has finished it."""
        ends = []
        for k in range(self.num_tasks - 1):
            ends.append(max(self.starts(c)[k + 1] for c in range(num_clients)) - 1)
        return ends + [self.num_rounds]
