"""Who is in the federation: nodes, their partition ids, and the clients sampled each round."""

from __future__ import annotations

import random
from logging import WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid

from fedcl.federation.replies import client_error


class Population:
    """Maps node ids to partition ids (asked once per node) and samples by partition id from the seed."""

    def __init__(self, seed: int, fraction_train: float) -> None:
        self.seed, self.fraction_train = seed, fraction_train
        self.node_to_client: dict[int, int] = {}
        self.own_data: set[int] = set()  # nodes with their own dataset (a SuperNode's data-root)

    def who(self, node: int) -> str:
        pid = self.node_to_client.get(node)
        return f"client {pid}" if pid is not None else f"node {node}"

    def order_key(self, node: int) -> tuple[int, int]:
        """Partition order (unknown nodes last): the same sums, bit for bit, whatever the arrival order."""
        return self.node_to_client.get(node, 1 << 62), node

    def discover(self, grid: Grid, timeout: float) -> None:
        """Ask nodes the server has not met yet for their partition id (one small query message each); a node
        that does not answer within ``timeout`` is asked again in the next round."""
        new = sorted(set(grid.get_node_ids()) - set(self.node_to_client))
        if not new:
            return
        queries = [Message(RecordDict({"config": ConfigRecord({"fedcl": "partition-id"})}), node, MessageType.QUERY) for node in new]
        for reply in grid.send_and_receive(queries, timeout=timeout):
            metrics = None if reply.has_error() else reply.content.metric_records.get("metrics")
            if metrics is None or "partition-id" not in metrics:
                reason = client_error(reply.error.reason) if reply.has_error() else "no partition-id"
                log(WARNING, "fedcl: node %s did not say its partition id (%s); asking again next round", reply.metadata.src_node_id, reason)
                continue
            self.node_to_client[reply.metadata.src_node_id] = int(metrics["partition-id"])
            if int(metrics.get("own-data", 0)):
                self.own_data.add(reply.metadata.src_node_id)

    def connected(self, grid: Grid) -> list[int]:
        """Connected nodes with a known partition id, in partition order."""
        connected = set(grid.get_node_ids())
        return sorted((n for n in self.node_to_client if n in connected), key=self.order_key)

    def sample(self, server_round: int, grid: Grid) -> list[int]:
        """``fraction_train`` of the population, drawn from (seed, round): the same clients whatever the node ids."""
        nodes = self.connected(grid)
        k = max(1, int(len(nodes) * self.fraction_train)) if nodes else 0
        chosen = random.Random(f"{self.seed}-sample-{server_round}").sample(range(len(nodes)), k)
        return [nodes[i] for i in sorted(chosen)]
