"""Single-device comparison on Split-Fashion-MNIST: each transform vs head-only vs fine-tuning.

    .venv/bin/python simulations/core_table.py --out runs/core_table [--set data.image_size=64 ...]

Writes ``table.md`` and one results.json per run under ``--out``; existing runs are reused
(delete a run's folder or pass ``--force`` to re-run it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedcl.config import build_config
from fedcl.runner import run_single_device, write_results

RUNS = [
    ("input_tuning", "additive", "linear"),
    ("input_tuning", "border", "linear"),
    ("input_tuning", "color", "linear"),
    ("input_tuning", "residual_conv", "linear"),
    ("input_tuning", "spatial", "linear"),
    ("head_only", "none", "linear"),
    ("head_only", "none", "ncm"),
    ("partial_finetune", "none", "linear"),
    ("finetune", "none", "linear"),
]
SCENARIOS = {"class_incremental": "linear", "task_incremental": "multi_head"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/core_table")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--force", action="store_true", help="re-run runs whose results.json exists")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for scenario in args.scenarios.split(","):
        for method, transform, head in RUNS:
            if scenario == "task_incremental" and head == "linear":
                head = SCENARIOS[scenario]
            overrides = [f"data.scenario={scenario}", f"method.name={method}", f"model.transform.name={transform}", f"model.head.name={head}"]
            run_dir = out / f"{scenario}-{method}-{transform}-{head}"
            if (run_dir / "results.json").exists() and not args.force:  # resume an interrupted table
                rows.append(json.loads((run_dir / "results.json").read_text()))
                continue
            cfg = build_config(args.preset, None, overrides + args.overrides)
            r = run_single_device(cfg)
            write_results(r, run_dir)
            rows.append(r)
            print(f"{scenario:18s} {method:17s} {transform:13s} {head:10s} acc={r['final_avg_accuracy']:.3f} "
                  f"forget={r['avg_forgetting']:.3f} params={r['trainable_params']} time={r['wall_time_s']}s", flush=True)
    lines = ["| scenario | method | transform | head | final acc | forgetting | BWT | trainable params | time (s) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['method']} | {r['transform']} | {r['config']['model']['head']['name']} | "
                     f"{r['final_avg_accuracy']:.3f} | {r['avg_forgetting']:.3f} | {r['bwt']:.3f} | {r['trainable_params']:,} | "
                     f"{r['wall_time_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
