"""The default federated job with many clients, inline: process CPU time, wall time and peak resident memory.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/many_clients.py 100 /tmp/many100

One round per task (5 rounds plus the collect step). docs/performance.md section 11.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from fedcl.config import build_config
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_federated


def main(clients: int, out: str) -> dict:
    cfg = build_config("federated", None, [f"federation.num_clients={clients}", "federation.rounds_per_task=1",
                                           "federation.backend=inline"], schema=FedRunConfig)
    start, cpu = time.time(), time.process_time()
    results = run_federated(cfg, out, quiet=True)
    return {"clients": clients, "wall_s": round(time.time() - start, 1), "cpu_s": round(time.process_time() - cpu, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "final_accuracy": results["final_avg_accuracy"], "rounds": results["rounds"],
            "mb_exchanged": round(results["communication"]["bytes_total"] / 1e6, 1)}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2])))
