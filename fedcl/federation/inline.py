"""An in-process Grid: the ServerApp's messages go straight to the ClientApp, node by node.

Same ServerApp, strategy, ClientApp and Flower Messages as the Ray engine, without
Ray workers or a SuperLink: for sweeps on a laptop and for tests. Each node has its
own :class:`~flwr.app.Context` (its ``state`` persists across rounds, as on a
SuperNode); the backbone and data are shared, as in one Ray worker.

A node's time is its own (on a real federation nodes run in parallel): the time its
ClientApp took, plus any :func:`add_virtual_delay` a fault injector added (a simulated
late reply costs no real sleep here).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from fedcl.federation.flower_adapter import (
    SUPERLINK_NODE_ID,
    Run,
    empty_run,
    mark_delivered,
    new_message_id,
    over_the_wire,
    task_identity,
)

#: Flower's code for an exception raised inside a ClientApp
CLIENT_APP_RAISED_EXCEPTION = 0
FIRST_NODE_ID = 1_000

_virtual_delay = [0.0]


def add_virtual_delay(seconds: float) -> None:
    """Count ``seconds`` more for the reply being produced in this process (no real sleep)."""
    _virtual_delay[0] += seconds


class InlineGrid(Grid):
    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1, run_config: dict | None = None,
                 node_configs: list[dict] | None = None) -> None:
        self.client_app = client_app
        self._run = empty_run(run_id)
        extra = node_configs or [{} for _ in range(num_nodes)]
        self.contexts = {
            FIRST_NODE_ID + i: Context(run_id, FIRST_NODE_ID + i, {"partition-id": i, "num-partitions": num_nodes, **extra[i]},
                                       RecordDict(), dict(run_config or {}))
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}
        self._elapsed: dict[str, float] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            message_id = new_message_id(msg)
            started = time.perf_counter()
            _virtual_delay[0] = 0.0
            self._replies[message_id] = self._deliver(msg)
            self._elapsed[message_id] = time.perf_counter() - started + _virtual_delay[0]
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Replies of the nodes that answered within ``timeout`` (each node's own time: on a real
        federation they run in parallel); later ones are dropped, as the server stops waiting."""
        ids = list(self.push_messages(messages))
        late = {i for i in ids if timeout is not None and self._elapsed.pop(i, 0.0) > timeout}
        return self.pull_messages([i for i in ids if i not in late])

    def _deliver(self, msg: Message) -> Message:
        """Run the ClientApp on the message as a SuperNode would receive it (rebuilt from its wire bytes)."""
        node = msg.metadata.dst_node_id
        received = over_the_wire(msg)
        mark_delivered(received, time.time())
        with task_identity(self._run.run_id, node, node):
            try:
                reply = self.client_app(received, self.contexts[node])
            except Exception as exc:  # noqa: BLE001 (a crashing client becomes an error reply, as on a SuperNode)
                reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
                reply = Message(Error(CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=received)
        reply = over_the_wire(reply)
        new_message_id(reply)
        return reply


def run_inline(server_app, client_app: ClientApp, num_nodes: int, run_config: dict | None = None,
               node_configs: list[dict] | None = None) -> InlineGrid:
    """Run a ServerApp against ``num_nodes`` in-process ClientApps; returns the grid (its contexts hold client state).
    ``node_configs`` adds per-node settings, as ``--node-config`` does on a SuperNode."""
    grid = InlineGrid(client_app, num_nodes, run_config=run_config, node_configs=node_configs)
    with task_identity(grid.run.run_id, SUPERLINK_NODE_ID, 0):
        server_app(grid, Context(grid.run.run_id, SUPERLINK_NODE_ID, {}, RecordDict(), dict(run_config or {})))
    return grid
