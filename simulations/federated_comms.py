"""Communication and accuracy of the default federated job: fp32 vs fp16 vs 8-bit, and single-device on the same stream.

    .venv/bin/python simulations/federated_comms.py --out runs/federated_comms [--set key=value ...]

Writes ``table.md`` under ``--out`` (one results.json per run beside it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedcl.config import build_config
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_ray_simulation
from fedcl.runner import run_single_device, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/federated_comms")
    parser.add_argument("--config", default="simulations/fmnist_10clients.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--quantizations", default="none,fp16,int8")
    args = parser.parse_args()
    out = Path(args.out)
    lines = ["| run | final acc | forgetting | MB per client-round (up+down) | % of full-model FedAvg | total MB | wall s | simulated s |",
             "|---|---|---|---|---|---|---|---|"]
    for q in args.quantizations.split(","):
        cfg = build_config(None, args.config, args.overrides + [f"federation.quantization={q}"], schema=FedRunConfig)
        r = run_ray_simulation(cfg, out / f"federated-{q}")
        c = r["communication"]
        client_rounds = sum(len(row["per_client_up"]) for row in c["per_round"])
        per_cr = (c["bytes_up"] + c["bytes_down"]) / client_rounds / 1e6
        lines.append(f"| federated, {q} | {r['final_avg_accuracy']:.3f} | {r['avg_forgetting']:.3f} | {per_cr:.4f} | "
                     f"{100 * c['fraction_of_full_model']:.3f} % | {c['bytes_total'] / 1e6:.2f} | {r['wall_time_s']:.0f} | {r['simulated_total_time_s']:.0f} |")
        print(lines[-1], flush=True)
    cfg = build_config(None, args.config, args.overrides, schema=FedRunConfig)
    r = run_single_device(cfg)
    write_results(r, out / "single-device")
    lines.append(f"| single device, same stream ({cfg.train.epochs} epochs/task) | {r['final_avg_accuracy']:.3f} | {r['avg_forgetting']:.3f} | - | - | - | {r['wall_time_s']:.0f} | - |")
    print(lines[-1])
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
