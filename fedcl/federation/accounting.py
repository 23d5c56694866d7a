"""Exact message sizes and the byte ledger.

Flower (>= 1.20) sends a message as a tree of "inflatable" objects (message,
record dict, records, arrays, array chunks), each deflated to bytes and pushed once
per object id. The size of a message is the sum of its objects' deflated bytes
(transport framing such as gRPC/HTTP headers is not included). The simulation
engine reports 0 network bytes, so fedcl counts them here, on both sides
(:func:`fedcl.federation.flower_adapter.message_bytes`).

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

from fedcl.federation.flower_adapter import message_bytes

__all__ = ["ByteLedger", "message_bytes"]


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
