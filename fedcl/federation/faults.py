"""Fault injection for robustness experiments: a Flower ClientApp mod, used by simulations and tests.

``federation.fault_rate`` / ``fault_kind`` / ``fault_schedule`` make chosen clients crash (the
ClientApp raises, the server gets an error reply) or reply late ("timeout": the reply comes after
``round_timeout_s``, so the server has stopped waiting). The production ClientApp has no fault
code: :func:`build_client_app` adds this mod only when a simulation's config asks for faults.
On the inline backend a late reply costs no real sleep (:func:`fedcl.federation.inline.add_virtual_delay`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import MessageType

from fedcl.config import FedRunConfig
from fedcl.federation.settings import fault_schedule


class InjectedFault(RuntimeError):
    """A crash injected by ``federation.fault_rate`` or ``federation.fault_schedule`` (robustness experiments)."""


def injected_fault(cfg: FedRunConfig, pid: int, server_round: int) -> str | None:
    """The fault this client suffers in this round ("crash" or "timeout"), if any: scheduled, else drawn from the seed."""
    scheduled = fault_schedule(cfg).get((server_round, pid))
    if scheduled:
        return scheduled
    rate = cfg.federation.fault_rate
    if rate > 0 and random.Random(f"{cfg.seed}-fault-{pid}-{server_round}").random() < rate:
        return cfg.federation.fault_kind
    return None


def has_faults(cfg: FedRunConfig) -> bool:
    return cfg.federation.fault_rate > 0 or bool(cfg.federation.fault_schedule)


def late_by(cfg: FedRunConfig) -> float:
    """How long the ClientApp waits before a "timeout" reply: past the server's deadline, which began
    before the client received the request."""
    return cfg.federation.round_timeout_s + 1


def fault_mod(cfg: FedRunConfig, wait: Callable[[float], None] | None = None):
    """A ClientApp mod injecting ``cfg``'s faults into training messages. ``wait`` delays a late reply
    (default: a virtual delay on the inline backend, a real sleep elsewhere)."""
    if wait is None:
        from fedcl.federation.inline import add_virtual_delay

        wait = add_virtual_delay if cfg.federation.backend == "inline" else time.sleep

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        pid = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        fault = injected_fault(cfg, pid, server_round)
        if fault == "crash":
            raise InjectedFault(f"client {pid} crashed in round {server_round} (injected fault)")
        reply = call_next(msg, context)
        if fault == "timeout":
            wait(late_by(cfg))
        return reply

    return mod
