"""Exact message sizes: the bytes Flower serialises for a Message.

Flower (>= 1.20) sends a message as a tree of "inflatable" objects (message,
record dict, records, arrays, array chunks), each deflated to bytes and pushed once
per object id. The size of a message is the sum of its objects' deflated bytes
(transport framing such as gRPC/HTTP headers is not included). The simulation
engine reports 0 network bytes, so fedcl counts them here, on both sides.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from flwr.app import Message
from flwr.supercore.inflatable.inflatable_object import InflatableObject, get_all_nested_objects


def message_bytes(message: Message | InflatableObject) -> int:
    """Serialized size of a Message (or of any inflatable part of one, e.g. its RecordDict)."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


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
