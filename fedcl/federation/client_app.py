"""The fedcl ClientApp: one edge device training on its own non-stationary stream.

In a deployment every message starts a new ClientApp process, so this module imports no model code: the
server's query (who is this node?) is answered without torch, and a train or evaluate message imports
:mod:`fedcl.federation.client_handlers` (torch, timm, the data) when it arrives. In fedcl's own simulations
(an app built with a config) the query loads that code, as the worker lives on for later messages.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedcl.federation.app_config import resolve_config
from fedcl.federation.faults import fault_mod, has_faults
from fedcl.federation.node import data_root, partition_id, reply
from fedcl.federation.settings import FedRunConfig


def handle_query(msg: Message, context: Context) -> Message:
    """The server asks who this node is: its partition id (it samples and reports by partition, not node id),
    and whether it has its own data (then only the node itself can measure its local accuracy)."""
    return reply(msg, {"partition-id": partition_id(context), "own-data": int(data_root(context) is not None)})


def build_client_app(cfg: FedRunConfig | None = None, client_state_dir: str | Path | None = None) -> ClientApp:
    """A ClientApp bound to ``cfg``, or reading the run config when ``cfg`` is None (``flwr run``).
    ``client_state_dir``: where simulated clients keep their state (a node's ``state-dir`` takes precedence).
    A simulation whose config asks for faults gets the fault-injection mod (:mod:`fedcl.federation.faults`)."""
    app = ClientApp(mods=[fault_mod(cfg)] if cfg is not None and has_faults(cfg) else [])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        from fedcl.federation import client_handlers  # model code: imported by the messages that need it

        return client_handlers.handle_train(resolve_config(cfg, context), msg, context, client_state_dir)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        if cfg is not None:
            # fedcl's own simulation: the worker lives on, and the server awaits a node's first reply (this one) the
            # longer of node_wait_s and round_timeout_s, so the model code is loaded now, not inside round 1's deadline
            from fedcl.federation import client_handlers  # noqa: F401
        return handle_query(msg, context)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        from fedcl.federation import client_handlers

        return client_handlers.handle_evaluate(resolve_config(cfg, context), msg, context)

    return app


app = build_client_app()
