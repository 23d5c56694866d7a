"""Experiment tracking (optional ``tracking`` extra): a finished run's results written as TensorBoard
scalars with TensorBoard's own writer, so runs can be compared in TensorBoard.

Tags (step = round for federated runs, stream step for single-device runs):
``accuracy/mean_all_tasks``, ``accuracy/task_<t>``, and for federated runs ``loss/train``, ``bytes/up``,
``bytes/down`` and ``bytes/full_model_fedavg``; ``final/*`` holds the headline figures at step 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedcl.optional import require

TRACKERS = ("none", "tensorboard")
TENSORBOARD_DIR = "tensorboard"


def _writer_class():
    require("tensorboard", "tracking", "--log tensorboard")
    return require("torch.utils.tensorboard", "tracking", "--log tensorboard", package="tensorboard").SummaryWriter


def check_tracker(name: str) -> None:
    """Fail before the run starts when the tracker's extra is missing."""
    if name == "tensorboard":
        _writer_class()


def run_scalars(results: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Every scalar written for ``results``: tag -> [(step, value)]."""
    scalars: dict[str, list[tuple[int, float]]] = {}

    def add(tag: str, step: int, value: float | None) -> None:
        if value is not None:
            scalars.setdefault(tag, []).append((step, float(value)))

    if "accuracy_per_round" in results:
        steps = {int(r): accs for r, accs in results["accuracy_per_round"].items()}
    else:
        steps = dict(enumerate(results["accuracy_matrix"]))
    for step, accs in sorted(steps.items()):
        add("accuracy/mean_all_tasks", step, sum(accs) / len(accs) if accs else None)
        for task, acc in enumerate(accs):
            add(f"accuracy/task_{task}", step, acc)
    for row in results.get("communication", {}).get("per_round", []):
        add("loss/train", row["round"], row.get("train_loss"))
        add("bytes/up", row["round"], row["bytes_up"])
        add("bytes/down", row["round"], row["bytes_down"])
        add("bytes/full_model_fedavg", row["round"], row.get("full_model_bytes"))
    for key in ("final_avg_accuracy", "avg_forgetting", "bwt"):
        add(f"final/{key}", 0, results.get(key))
    return scalars


def write_tensorboard(results: dict[str, Any], out: str | Path) -> Path:
    """Write ``results``' scalars under ``out/tensorboard``; returns that folder."""
    folder = Path(out) / TENSORBOARD_DIR
    writer = _writer_class()(log_dir=str(folder))
    try:
        for tag, points in run_scalars(results).items():
            for step, value in points:
                writer.add_scalar(tag, value, global_step=step)
    finally:
        writer.close()
    return folder


def track(name: str, results: dict[str, Any], out: str | Path) -> Path | None:
    """Write ``results`` to the tracker ``name`` ("none": nothing)."""
    return write_tensorboard(results, out) if name == "tensorboard" else None
