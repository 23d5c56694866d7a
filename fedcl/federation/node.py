"""Who a node is (its partition id, its own data) and how it replies: what every ClientApp handler needs,
without torch, so that answering the server's query costs a ClientApp process no model imports."""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict


def partition_id(context: Context) -> int:
    """The client's index: its partition of the shared dataset, its task schedule and its device profile."""
    try:
        return int(context.node_config["partition-id"])
    except KeyError:
        raise ValueError("node config has no 'partition-id' (pass --node-config 'partition-id=N num-partitions=M')") from None


def data_root(context: Context) -> str | None:
    """``--node-config 'data-root="/data/cam"'``: the node trains on its own dataset there (same layout as data.root)."""
    root = context.node_config.get("data-root")
    return str(root) if root else None


def reply(msg: Message, metrics: dict, arrays=None) -> Message:
    """The reply to ``msg``: metrics, and the arrays when there are any."""
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content=content, reply_to=msg)
