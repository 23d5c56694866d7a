"""Checks one training reply and turns it into a :class:`ClientUpdate`, or says why it is refused."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from flwr.app import Message

from fedcl.config import FedRunConfig
from fedcl.federation.aggregation import ClientUpdate, update_norm
from fedcl.federation.codec import BadUpdateError, decode, decode_update
from fedcl.federation.factors import read_factors


@dataclass
class TrainReply:
    """What a valid reply says: its client, the update (None when it did not train) and its figures."""

    pid: int
    task: int
    update: ClientUpdate | None
    unavailable: bool
    train_time_s: float
    loss: float


class Refused(Exception):
    """A reply left out of aggregation; the message says why (it goes to results.json). ``reply`` holds
    what the reply said about its client when it got that far (its bytes are still counted)."""

    def __init__(self, reason: str, reply: TrainReply | None = None) -> None:
        super().__init__(reason)
        self.reply = reply


#: a traceback's or a reason's "package.Name: message" line
_EXCEPTION_LINE = re.compile(r"^(?:[a-z_][\w]*\.)*([A-Z]\w*): (.+)$")
#: Flower's reason for an exception: "<class 'package.Name'>:<'message'>"
_FLOWER_REASON = re.compile(r"^<class '(?:[\w.]+\.)?([A-Za-z_]\w*)'>:<'(.*?)'>$", re.DOTALL)
_WRAPPERS = ("ClientAppException", "RayTaskError")
_UNPRINTABLE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x1f\x7f]+")
MAX_REASON_CHARS = 300


def client_error(reason: str) -> str:
    """The exception a client's error reply reports, as "Name: message" on one line of at most 300 printable
    characters, whichever backend wrapped it: Flower's "<class 'X'>:<'...'>", Ray's task error with its
    traceback (the client's own exception is the first "Name: message" line that is not a wrapper), the inline
    backend's "Name: message". The text comes from a client: it may be long or hold terminal escapes."""
    lines = [_UNPRINTABLE.sub(" ", line).strip() for line in reason.splitlines()]
    for line in lines:
        match = _EXCEPTION_LINE.match(line)
        if match and not match.group(1).startswith(_WRAPPERS):
            return _one_line(f"{match.group(1)}: {match.group(2)}")
    flower = _FLOWER_REASON.match(reason.strip())
    if flower:
        name, message = flower.groups()
        inner = message.split("Message: ", 1)[1] if name.startswith(_WRAPPERS) and "Message: " in message else message
        return _one_line(inner if name.startswith(_WRAPPERS) else f"{name}: {inner}")
    return _one_line(next((line for line in lines if line), "no reason given"))


def _one_line(text: str) -> str:
    text = " ".join(_UNPRINTABLE.sub(" ", text).split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def read_reply(msg: Message, server_round: int, who: str, cfg: FedRunConfig, global_state: dict[str, torch.Tensor],
               kinds: dict[str, str], backbone_crc: int | None, changes: frozenset[str] = frozenset(),
               factor_dims: dict[str, int] | None = None) -> TrainReply:
    """The reply's content, validated against the global model; raises :class:`Refused`. Keys in ``changes``
    (sums the client was not sent) carry the client's change, which is added to the global value here.
    Keys in ``factor_dims`` may come as Gram factors (:mod:`fedcl.federation.factors`), kept as they are."""
    if msg.has_error():
        raise Refused(f"round {server_round} {who}: client error: {client_error(msg.error.reason)}")
    metrics = msg.content.metric_records.get("metrics")
    if metrics is None or "partition-id" not in metrics:
        raise Refused(f"round {server_round} {who}: reply without 'metrics'")
    pid, n = int(metrics["partition-id"]), int(metrics["num-examples"])
    base = TrainReply(pid, int(metrics["task"]), None, bool(int(metrics.get("unavailable", 0))), 0.0, 0.0)
    if n == 0:
        return base  # unavailable this round, or no data for its current task
    source = f"client {pid} (round {server_round})"
    if backbone_crc is not None and int(metrics.get("backbone-crc", -1)) != backbone_crc:
        raise Refused(f"{source}: its backbone differs from the server's (fingerprint mismatch)", base)
    if "arrays" not in msg.content.array_records:
        raise Refused(f"{source}: no 'arrays'", base)
    optional = frozenset(k for k, kind in kinds.items() if kind == "sum")  # no new statistics: no change
    try:
        factors = read_factors(msg.content.array_records["arrays"], factor_dims or {}, source)
        state = decode_update(msg.content.array_records["arrays"], global_state, cfg.federation.quantization, source, optional)
    except BadUpdateError as exc:
        raise Refused(str(exc), base) from None
    if cfg.federation.quantization == "none":  # (a quantised update is decoded as global + update already)
        state.update({k: global_state[k] + v for k, v in state.items() if k in changes})
    bound = cfg.federation.max_update_norm
    if bound is not None and (norm := update_norm(state, global_state, kinds)) > bound:
        raise Refused(f"{source}: update norm {norm:.3g} exceeds federation.max_update_norm={bound:g}", base)
    update = ClientUpdate(state, n, list(metrics["class-counts"]), list(metrics["task-examples"]), factors)
    return TrainReply(pid, base.task, update, False, float(metrics["train-time-s"]), float(metrics["loss"]))


def read_collect_reply(msg: Message, server_round: int, who: str, reference: dict[str, torch.Tensor],
                       factor_dims: dict[str, int] | None = None) -> tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(client, its statistics' packed changes, its Gram factors) of a collect-step reply, validated against
    the 'sum' state and ``factor_dims``; raises :class:`Refused`."""
    if msg.has_error():
        raise Refused(f"collect step (round {server_round}) {who}: client error: {client_error(msg.error.reason)}")
    metrics = msg.content.metric_records.get("metrics")
    if metrics is None or "partition-id" not in metrics:
        raise Refused(f"collect step (round {server_round}) {who}: reply without 'metrics'")
    pid = int(metrics["partition-id"])
    if "arrays" not in msg.content.array_records:
        return pid, {}, {}
    record, source = msg.content.array_records["arrays"], f"client {pid} (collect step)"
    try:
        return pid, decode(record, reference, source, frozenset(reference)), read_factors(record, factor_dims or {}, source)
    except BadUpdateError as exc:
        raise Refused(str(exc)) from None
