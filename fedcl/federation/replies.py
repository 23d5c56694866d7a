"""Checks one training reply and turns it into a :class:`ClientUpdate`, or says why it is refused."""

from __future__ import annotations

import builtins
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


#: an exception line of a traceback: "package.Name: message", "Name: message" or a bare "Name" (not indented)
_EXCEPTION_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*)([A-Za-z_]\w*)(?:: (.*))?$")
#: Flower's reason for an exception: "<class 'package.Name'>:<'message'>" (Ray's name may be "RayTaskError(Inner)")
_FLOWER_REASON = re.compile(r"^<class '(?:[\w.]+\.)?([\w()]+)'>:<'(.*)'>$", re.DOTALL)
_WRAPPERS = ("ClientAppException", "RayTaskError")
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MAX_REASON_CHARS = 300
MAX_SCANNED_CHARS = 50_000


def client_error(reason: str) -> str:
    """The exception a client's error reply reports, as "Name: message" on one line of at most 300 printable
    characters, the same whichever backend carried it: Flower's "<class 'X'>:<'...'>" (a SuperNode), Ray's task
    error (its traceback's last exception that is not a wrapper: the one the client raised, as with chained causes
    Python prints it last; never Ray's header with process and actor ids), the inline backend's "Name: message" and
    traceback. The text comes from a client: it may be long or hold terminal escapes and control characters."""
    if len(reason) > 2 * MAX_SCANNED_CHARS:  # a traceback is a few kB: keep its two ends (Flower's format needs both)
        reason = reason[:MAX_SCANNED_CHARS] + "\n" + reason[-MAX_SCANNED_CHARS:]
    flower = _FLOWER_REASON.match(reason.strip())
    name, message = flower.groups() if flower else ("", reason)
    if flower and not name.startswith(_WRAPPERS):
        return _one_line(f"{name}: {message}" if message.strip() else name)
    raised = _last_raised(message)
    if raised:
        return _one_line(raised)
    if "Message: " in message:  # Flower's ClientAppException: "Exception ClientAppException occurred. Message: ..."
        inner = message.rsplit("Message: ", 1)[1]
        return _one_line(inner if inner.strip() else "ClientAppException")
    if flower:
        return _one_line(name)
    return _one_line(next((line for line in message.splitlines() if line.strip()), "no reason given"))


def _last_raised(text: str) -> str | None:
    """The last unindented exception line that is not a wrapper, as "Name: message" (None when there is none).
    Its name must be module-qualified (as tracebacks print any non-builtin exception) or a builtin exception,
    so that a multi-line message's "Expected: (3, 4)" is not taken for one; the inline reason's first line
    ("Name: message", unqualified) counts when nothing else does."""
    found = None
    for number, raw in enumerate(text.splitlines()):
        line = _ESCAPES.sub("", raw).rstrip()
        match = _EXCEPTION_LINE.match(line)
        if not match or match.group(2).startswith(_WRAPPERS):
            continue
        module, name, message = match.groups()
        builtin = getattr(builtins, name, None)
        if module or (isinstance(builtin, type) and issubclass(builtin, BaseException)) or (number == 0 and message):
            found = f"{name}: {message}" if message and message.strip() else name
    return found


def _one_line(text: str) -> str:
    text = " ".join("".join(c if c.isprintable() else " " for c in _ESCAPES.sub(" ", text)).split())
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
