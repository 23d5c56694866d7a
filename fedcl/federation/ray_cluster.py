"""Checks, with deadlines, that the Ray cluster a simulation will use exists and can host one client.

Ray's own ``ray.init(address=...)`` retries an unreachable address forever, and a client that asks for
more CPUs or GPUs than the cluster has leaves Flower's actor pool empty; both would hang the run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from fedcl.config.federation import ray_is_local
from fedcl.optional import require_ray
from fedcl.errors import FedclError
from fedcl.federation.settings import FedRunConfig

#: how long connecting to a Ray cluster and reading its resources may take at most
CONNECT_TIMEOUT_S = 60.0
#: where ``ray start`` records the address of the cluster running on this machine (for ``address="auto"``)
CURRENT_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")
_RESOURCES_SCRIPT = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="error", log_to_driver=False, include_dashboard=False)
print(json.dumps(ray.cluster_resources()))
"""


class RayClusterError(FedclError):
    """A Ray cluster that cannot be reached or cannot host a client."""


def _bootstrap_address(address: str) -> str:
    if address != "auto":
        return address.removeprefix("ray://")
    found = os.environ.get("RAY_ADDRESS") or (CURRENT_CLUSTER_FILE.read_text().strip() if CURRENT_CLUSTER_FILE.is_file() else "")
    if not found:
        raise RayClusterError('federation.ray_address="auto" but no Ray cluster runs on this machine '
                              "(start one with 'ray start --head', or unset federation.ray_address)")
    return found.removeprefix("ray://")


def check_reachable(address: str, timeout_s: float) -> None:
    """Fail within ``timeout_s`` when nothing listens at the cluster's ``host:port``."""
    host, sep, port = _bootstrap_address(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayClusterError(f"federation.ray_address={address!r} is not host:port (e.g. 10.0.0.5:6379), 'auto' or 'local'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayClusterError(f"cannot reach a Ray cluster at {address} within {timeout_s:.0f} s "
                              f"({exc.strerror or exc.__class__.__name__}); start it with 'ray start --head' "
                              "or unset federation.ray_address") from None


def cluster_resources(address: str, timeout_s: float) -> dict[str, float]:
    """The resources of the cluster at ``address``, read by a separate process that is stopped at the deadline."""
    check_reachable(address, min(timeout_s, 10.0))
    try:
        done = subprocess.run([sys.executable, "-c", _RESOURCES_SCRIPT, address], capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise RayClusterError(f"connecting to the Ray cluster at {address} took longer than {timeout_s:.0f} s; "
                              "is it a Ray head node (its GCS port, usually 6379)?") from None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise RayClusterError(f"cannot connect to the Ray cluster at {address}: {last}") from None


def local_resources(cfg: FedRunConfig) -> dict[str, float]:
    """What the local Ray cluster that Flower starts will have."""
    import torch

    return {"CPU": float(cfg.federation.ray_num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_ray_cluster(cfg: FedRunConfig) -> None:
    """The configured cluster is reachable and can host at least one client (one clear error otherwise)."""
    f = cfg.federation
    local = ray_is_local(f.ray_address)
    available = local_resources(cfg) if local else cluster_resources(f.ray_address, CONNECT_TIMEOUT_S)
    where = "this machine's Ray cluster" if local else f"the Ray cluster at {f.ray_address}"
    for key, name, need in (("CPU", "client_num_cpus", f.client_num_cpus), ("GPU", "client_num_gpus", f.client_num_gpus)):
        have = float(available.get(key, 0.0))
        if need > have:
            raise RayClusterError(f"federation.{name}={need:g} but {where} has {have:g} {key}s, so no client could ever start; "
                                  f"lower federation.{name}" + (" or raise federation.ray_num_cpus" if key == "CPU" and local else ""))


def start_ray(init_args: dict[str, Any]) -> None:
    """Start (or connect to) Ray before Flower does, keeping this process's signal handlers: ``ray.init`` replaces
    SIGTERM's with ``sys.exit``, which would leave Ray's shutdown noise and a run that ignores the stop."""
    ray = require_ray()

    if ray.is_initialized():
        return
    in_main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    # what Flower's Ray backend does too: the workers import fedcl from wherever this process does
    pythonpath = os.pathsep.join([*sys.path, *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])
    os.environ["PYTHONPATH"] = pythonpath
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Ray's notes on future defaults
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **{"include_dashboard": False, **init_args})
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)
