"""Joint training, the upper bound: every task's data at once, no stream.

Wraps any method: the learner trains a single experience holding all tasks (each
sample keeps its task id). In a federation, each client trains on all its data
every round.
"""

from __future__ import annotations

from fedcl.data.scenarios import Experience, merge_experiences
from fedcl.methods.base import PLUGINS, Plugin


@PLUGINS.register("joint")
class Joint(Plugin):
    name = "joint"

    def reshape_stream(self, stream: list[Experience]) -> list[Experience]:
        return [merge_experiences(stream)]
