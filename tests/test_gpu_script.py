"""benchmarks/gpu.sh --dry-run: the GPU script's own code on the CPU at tiny size writes one JSON with every figure."""

import json
import math
import subprocess
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
PARTS = {
    "shapes": ["steps"],
    "throughput": ["input_tuning_images_per_s", "finetune_images_per_s", "frozen_forward_images_per_s", "input_tuning_over_frozen_forward"],
    "memory:input_tuning": ["peak_mb"],
    "memory:input_tuning_checkpointing": ["peak_mb"],
    "memory:input_tuning_checkpointing_stem_head": ["peak_mb"],
    "memory:finetune": ["peak_mb"],
    "fused": ["rows"],
    "clients_per_gpu": ["steps", "best_clients", "best_images_per_s"],
    "federated": ["final_avg_accuracy", "accuracy_matrix", "wall_time_s"],
}


def numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
        yield value


@pytest.mark.integration
def test_dry_run_writes_every_figure(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", str(out)], check=False, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True
    for name, fields in PARTS.items():
        part = report["parts"][name]
        assert part["status"] == "ok", (name, part.get("detail"))
        for field in fields:
            assert part[field] not in (None, [], {}), (name, field)
    assert report["parts"]["clients_per_gpu"]["steps"][0]["clients"] == 1
    assert {r["clients"] for r in report["parts"]["fused"]["rows"]} == {1, 2}
    assert set(report["summary"]) == {f"memory_{v}_over_finetune" for v in ("input_tuning", "input_tuning_checkpointing", "input_tuning_checkpointing_stem_head")}
    values = list(numbers(report))
    assert values and all(v is not None and math.isfinite(v) for v in values)


@pytest.mark.parametrize("args, message", [
    (["--parts", "shapes,bogus"], "unknown part 'bogus'"),  # refused before the first part runs
    (["--parts", "shapes", "{tmp}"], "is a folder"),
    (["--parts", "shapes", "{tmp}/report.json/x.json"], "is not a writable folder"),
])
def test_bad_arguments_are_refused_before_any_part_runs(tmp_path, args, message):
    report = tmp_path / "report.json"
    report.write_text("kept")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", *args], check=False, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()] and message in proc.stderr, proc.stderr
    assert proc.stdout == ""  # no part ran
    assert report.read_text() == "kept"
