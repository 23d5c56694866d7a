"""Exact message sizes: the bytes Flower serialises for a Message.

Flower (>= 1.20) sends a message as a tree of "inflatable" objects (message,
record dict, records, arrays, array chunks), each deflated to bytes and pushed once
per object id. The size of a message is the sum of its objects' deflated bytes
(transport framing such as gRPC/HTTP headers is not included). The simulation
engine reports 0 network bytes, so fedcl counts them here, on both sides.

Flower draws run, node and task ids at random and encodes them as varints (1 to
10 bytes; engines leave some unset), so the same message can differ by a few
bytes from run to run and engine to engine. The message's own object is counted
with all five ids at their widest (10 bytes each): at most about 55 bytes per
message above the wire, and the same in every run with the same seed, on Ray,
inline or a real SuperLink.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from flwr.app import Message
from flwr.common.serde_utils import error_to_proto, metadata_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611
from flwr.supercore.inflatable.inflatable_object import InflatableObject, add_header_to_object_body, get_all_nested_objects

_WIDEST_ID = 2**64 - 1  # a uint64 whose varint takes the most bytes


def _message_object_bytes(message: Message) -> int:
    """Size of the Message object itself (metadata), with run, node and task ids at their widest."""
    proto = metadata_to_proto(message.metadata)
    proto.message_id = ""  # as in Message.deflate
    for name in ("run_id", "src_node_id", "dst_node_id", "src_task_id", "dst_task_id"):
        setattr(proto, name, _WIDEST_ID)  # set or not, random or not: the same count on every engine
    error = error_to_proto(message.error) if message.has_error() else None
    body = ProtoMessage(metadata=proto, content=None, error=error).SerializeToString(deterministic=True)
    return len(add_header_to_object_body(body, message))


def message_bytes(message: Message | InflatableObject) -> int:
    """Serialized size of a Message (or of any inflatable part of one, e.g. its RecordDict)."""
    total = 0
    for obj in get_all_nested_objects(message).values():
        total += _message_object_bytes(obj) if isinstance(obj, Message) else len(obj.deflate())
    return total


@dataclass
class ByteLedger:
    """Bytes down (server -> client) and up (client -> server), per round and per client."""

    down: dict[int, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    up: dict[int, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))

    def record(self, direction: str, server_round: int, client: int, nbytes: int) -> None:
        book = self.down if direction == "down" else self.up
        book[server_round][client] = book[server_round].get(client, 0) + nbytes

    def total(self, direction: str) -> int:
        book = self.down if direction == "down" else self.up
        return sum(sum(per_client.values()) for per_client in book.values())

    def per_round(self) -> list[dict]:
        rounds = sorted(set(self.down) | set(self.up))
        return [
            {
                "round": r,
                "bytes_down": sum(self.down[r].values()),
                "bytes_up": sum(self.up[r].values()),
                "per_client_down": {str(k): v for k, v in sorted(self.down[r].items())},
                "per_client_up": {str(k): v for k, v in sorted(self.up[r].items())},
            }
            for r in rounds
        ]
