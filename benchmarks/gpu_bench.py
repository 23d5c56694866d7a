"""The GPU benchmark behind ``benchmarks/gpu.sh``: one JSON with every GPU figure issue 16 asks for.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/gpu_bench.py [--dry-run] [--json PATH]

Parts, each run in its own process under its own time budget (seconds, GPU mode):
  shapes (45)            seconds of a training step at batch sizes seen for the first time vs again
  throughput (70)        images/s at 224 px in bf16: input tuning and full fine-tuning inside fedcl's learner
                         (data pipeline included), and the frozen backbone's forward pass alone (the limit)
  memory:* (4 x 25)      peak GPU memory (torch.cuda.max_memory_allocated) of one epoch: input tuning, input
                         tuning + activation checkpointing (timm's, per block), the same with the stem and head
                         recomputed too (benchmarks/memory.py's experiment), full fine-tuning; one process each
  fused (35)             fused clients (fedcl/fused.py) vs one client at a time, 1/8/64 clients
  federated (80)         a small 224 px federated class-incremental run of the default federated job (ridge head)
  clients_per_gpu (150)  Ray simulation with client_num_gpus = 1/k for k = 1, 2, 4, ... 64; stops when
                         images/s stops rising (or the budget ends)
A part writes its results after every step, so a part that fails or runs out of time keeps what it measured
(``status``: ok / timeout / error). ``--dry-run`` runs the same code on the CPU at 32 px with tiny sizes, every part
in one process (CPU memory: the bytes autograd saves for one batch; clients_per_gpu's clients in that process, not on Ray).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

BUDGETS = {"shapes": 45, "throughput": 70, "memory:input_tuning": 25, "memory:input_tuning_checkpointing": 25, "memory:input_tuning_checkpointing_stem_head": 25,
           "memory:finetune": 25,
           "fused": 35, "federated": 80, "clients_per_gpu": 150}  # the Ray part, the most variable, last
GPU = {"image_size": 224, "precision": "bf16", "device": "cuda", "batch_size": 64, "fused_clients": [1, 8, 64], "fused_images": 32,
       "max_clients": 64, "per_class": 100, "fed_clients": 4, "fed_tasks": 5, "fed_rounds_per_task": 2, "cpus": os.cpu_count() or 1,
       "measure_s": 10.0, "min_steps": 2, "fused_repeats": 2, "cpg_rounds": 2, "in_process": False, "cpg_backend": "ray"}
#: the dry run: the same code at the smallest sizes, every part in this process (each extra process pays ~6 s of CPU
#: importing timm; so would each Ray worker: clients_per_gpu's clients run in this process too), CPU memory as the bytes
#: autograd saves (resident size cannot be measured per part in one process)
DRY = {"image_size": 32, "precision": "fp32", "device": "cpu", "batch_size": 2, "fused_clients": [1, 2], "fused_images": 2,
       "max_clients": 1, "per_class": 2, "fed_clients": 2, "fed_tasks": 2, "fed_rounds_per_task": 1, "cpus": 1, "measure_s": 0.0,
       "min_steps": 1, "fused_repeats": 1, "cpg_rounds": 1, "in_process": True, "cpg_backend": "inline"}
DRY_BUDGET_SCALE = 6.0  # the CPU dry run loads the backbone and trains on a shared 2-core machine: slower, not bigger


class Part:
    """A part's results on disk, rewritten after every step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict = {}

    def put(self, **values) -> None:
        self.values.update(values)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.values))
        tmp.replace(self.path)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(step, images_per_step: int, seconds: float, device, min_steps: int = 2) -> float:
    """images/s of ``step()`` repeated for about ``seconds`` (after one warm-up call)."""
    step()
    _sync(device)
    start, done = time.perf_counter(), 0
    while done < min_steps or time.perf_counter() - start < seconds:
        step()
        done += 1
        _sync(device)
    return done * images_per_step / (time.perf_counter() - start)


def learner_for(method: str, s: dict, checkpointing: bool = False):
    """fedcl's learner for ``method`` on a fresh model (additive transform, linear head) + one synthetic experience."""
    import copy

    import torch
    from fused_clients import client_data

    from fedcl.backbones import create_backbone
    from fedcl.heads import create_head
    from fedcl.learner import Learner, TrainSettings
    from fedcl.methods import create_method
    from fedcl.model import ContinualModel
    from fedcl.transforms import create_transform

    backbone = copy.deepcopy(create_backbone("efficientnet_lite0"))
    m = create_method(method)
    transform = create_transform("additive" if m.uses_transform else "none", s["image_size"])
    model = ContinualModel(transform, backbone, create_head("linear", backbone.feature_dim, 10))
    settings = TrainSettings(batch_size=s["batch_size"], precision=s["precision"], device=s["device"], epochs=1,
                             activation_checkpointing=checkpointing)
    experience = client_data(1, 2 * s["batch_size"])[0]
    return Learner(model, m, settings, s["image_size"], torch.device(s["device"])), experience


def part_throughput(part: Part, s: dict, budget: float) -> None:
    import torch

    seconds = s["measure_s"]
    for method in ("input_tuning", "finetune"):
        learner, experience = learner_for(method, s)
        rate = timed_rate(lambda lr=learner, e=experience: lr.train_experience(e), len(experience), seconds, learner.device, s["min_steps"])
        part.put(**{f"{method}_images_per_s": rate})
    net, plan = learner.model.backbone.eval(), learner.plan
    x = plan.layout(torch.rand(s["batch_size"], 3, s["image_size"], s["image_size"], device=learner.device))

    def forward() -> None:
        with torch.inference_mode(), plan.autocast():
            net(x)

    part.put(frozen_forward_images_per_s=timed_rate(forward, s["batch_size"], seconds, learner.device, s["min_steps"]), batch_size=s["batch_size"],
             precision=plan.precision, image_size=s["image_size"])
    v = part.values
    part.put(input_tuning_over_frozen_forward=v["input_tuning_images_per_s"] / v["frozen_forward_images_per_s"],
             input_tuning_over_finetune=v["input_tuning_images_per_s"] / v["finetune_images_per_s"])


def part_shapes(part: Part, s: dict, budget: float) -> None:
    """Seconds of one input-tuning training step (forward + backward) at batch sizes seen for the first time vs
    again: whether kernels chosen or compiled per new shape cost the small, uneven batches of federated clients."""
    import torch

    learner, experience = learner_for("input_tuning", s)
    model, plan, device = learner.model, learner.plan, learner.device
    model.train()
    rows = []
    b = s["batch_size"]
    # as they come (train.pad_batches=never), then padded to a multiple of half the batch size (the default on CUDA)
    for size, pad in [(b, None), (b, None), (b - 1, None), (b - 1, None), (17, None), (17, None), (max(1, b - 2), b // 2), (9, b // 2), (3, b // 2)]:
        model.backbone.pad_multiple = pad
        x = plan.layout(torch.rand(size, 3, s["image_size"], s["image_size"], device=device))
        _sync(device)
        started = time.perf_counter()
        with plan.autocast():
            loss = model(x).float().logsumexp(1).mean()
        loss.backward()
        _sync(device)
        rows.append({"batch": size, "padded": pad is not None, "seconds": time.perf_counter() - started})
        part.put(steps=rows)


def part_memory(part: Part, s: dict, variant: str) -> None:
    """Peak memory of one training epoch (2 batches): GPU allocator peak on CUDA; on the CPU (dry run) the bytes
    autograd saves for one batch's backward (benchmarks/saved_activations.py)."""
    import torch

    method = "finetune" if variant == "finetune" else "input_tuning"
    learner, experience = learner_for(method, s, checkpointing="checkpointing" in variant)
    if variant.endswith("stem_head"):
        from memory import checkpoint_stem_and_head

        checkpoint_stem_and_head(learner.model.backbone.model)
    device = learner.device
    if device.type != "cuda":
        from saved_activations import saved_bytes

        from fedcl.data.preprocessing import to_model_input

        learner.model.train()
        images = to_model_input(experience.data.images[: s["batch_size"]], s["image_size"], device)
        saved = saved_bytes(learner.model, images, experience.data.labels[: s["batch_size"]])
        part.put(peak_mb=saved / 2**20, measure="cpu_autograd_saved_bytes")
        return
    learner.train_experience(experience)  # warm-up: kernels chosen, allocator pools exist
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    learner.train_experience(experience)
    _sync(device)
    part.put(peak_mb=(torch.cuda.max_memory_allocated(device) - base) / 2**20, measure="cuda_max_memory_allocated")


def part_fused(part: Part, s: dict, budget: float) -> None:
    import torch
    from fused_clients import measure

    rows = []
    for clients in s["fused_clients"]:
        rows.append(measure(clients, s["fused_images"], s["image_size"], torch.device(s["device"]), s["precision"], repeats=s["fused_repeats"]))
        part.put(rows=rows)


def fed_config(s: dict, overrides: list[str], preset: str = "federated_input_tuning"):
    from fedcl.config import build_config
    from fedcl.data import load_dataset
    from fedcl.errors import FedclError

    try:
        load_dataset("fashion_mnist")
        dataset = "fashion_mnist"
    except (FedclError, OSError):
        dataset = "digits"  # bundled with scikit-learn: a fresh GPU machine may lack Debian's Fashion-MNIST
    base = [f"data.dataset={dataset}", f"data.image_size={s['image_size']}", f"train.device={s['device']}", f"train.precision={s['precision']}",
            f"data.max_train_per_class={s['per_class']}", f"data.max_test_per_class={s['per_class']}", "federation.evaluate_clients=false",
            "federation.evaluate_every_round=false", 'federation.device_profiles=["server"]', f"train.batch_size={s['batch_size']}"]
    return build_config(preset, None, base + overrides)


def clients_step(s: dict, k: int) -> dict:
    """One Ray simulation with k clients sharing the GPU (1/k each): images/s of its second round. (The dry run
    runs the clients in its own process: a CPU has no GPU to share, and Ray is tested by tests/test_simulation.py.)"""
    from fedcl.federation.simulation import run_federated

    gpus = 1.0 / k if s["device"] == "cuda" else 0.0
    cfg = fed_config(s, ["data.num_tasks=1", "data.classes_per_task=10", f"federation.num_clients={k}", f"federation.rounds_per_task={s['cpg_rounds']}",
                         f"federation.backend={s['cpg_backend']}", "federation.partition=iid", "federation.boundary_jitter=0", f"federation.client_num_gpus={gpus}",
                         f"federation.client_num_cpus={max(0.1, min(1.0, s['cpus'] / k)):.3f}", f"federation.ray_num_cpus={s['cpus']}"])
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        results = run_federated(cfg, out, quiet=True)
        wall = time.perf_counter() - started
    last = results["communication"]["per_round"][-1]
    return {"clients": k, "client_num_gpus": gpus, "images_per_s": last["num_examples"] / max(last["real_round_time_s"], 1e-9),
            "round_s": last["real_round_time_s"], "run_s": wall}


def part_clients_per_gpu(part: Part, s: dict, budget: float) -> None:
    start, steps, k = time.perf_counter(), [], 1
    while k <= s["max_clients"]:
        steps.append(clients_step(s, k))
        best = max(steps, key=lambda r: r["images_per_s"])
        part.put(steps=steps, best_clients=best["clients"], best_images_per_s=best["images_per_s"])
        elapsed = time.perf_counter() - start
        if len(steps) >= 2 and steps[-1]["images_per_s"] <= 1.05 * steps[-2]["images_per_s"]:
            break  # throughput stopped rising
        if elapsed + 2 * steps[-1]["run_s"] > budget:
            break  # the next step (more clients) would not fit
        k *= 2
    part.put(stopped_at_clients=steps[-1]["clients"])


def part_federated(part: Part, s: dict, budget: float) -> None:
    from fedcl.federation.simulation import run_inline_simulation

    # the default federated job (ridge head on frozen features, fedcl's best class-incremental configuration)
    cfg = fed_config(s, [f"federation.num_clients={s['fed_clients']}", f"data.num_tasks={s['fed_tasks']}",
                         f"federation.rounds_per_task={s['fed_rounds_per_task']}", "federation.backend=inline"], preset="federated")
    with tempfile.TemporaryDirectory() as out:
        r = run_inline_simulation(cfg, out, quiet=True)
    part.put(preset="federated", dataset=cfg.data.dataset, image_size=cfg.data.image_size, num_clients=cfg.federation.num_clients, rounds=r["rounds"],
             final_avg_accuracy=r["final_avg_accuracy"], accuracy_matrix=r["accuracy_matrix"], wall_time_s=r["wall_time_s"])


def run_part(name: str, s: dict, budget: float, path: Path) -> None:
    part = Part(path)
    if name.startswith("memory:"):
        part_memory(part, s, name.split(":", 1)[1])
    else:
        {"shapes": part_shapes, "throughput": part_throughput, "fused": part_fused, "clients_per_gpu": part_clients_per_gpu, "federated": part_federated}[name](part, s, budget)


def measured_part(name: str, budget: float, run) -> dict:
    """``run(path)`` -> (status, detail) runs part ``name``, which writes its values to ``path``; returns them with the status."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "part.json"
        started = time.perf_counter()
        status, detail = run(path)
        values = json.loads(path.read_text()) if path.exists() else {}
    out = {"status": status, "seconds": round(time.perf_counter() - started, 1), "budget_s": budget, **values}
    if detail:
        out["detail"] = detail
    return out


def inline_part(name: str, s: dict, budget: float) -> dict:
    """Run one part in this process (the dry run): the same part code, no time limit."""

    def run(path: Path) -> tuple[str, str | None]:
        try:
            run_part(name, s, budget, path)
        except Exception as exc:  # a part that fails keeps what it measured, as a spawned one does
            return "error", f"{type(exc).__name__}: {exc}"
        return "ok", None

    return measured_part(name, budget, run)


def spawn_part(name: str, dry_run: bool, budget: float) -> dict:
    """Run one part in its own process with a hard time limit; returns what it wrote plus its status."""

    def run(path: Path) -> tuple[str, str | None]:
        cmd = [sys.executable, __file__, "--part", name, "--part-json", str(path), "--budget", str(budget)] + (["--dry-run"] if dry_run else [])
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=budget + 15)
        except subprocess.TimeoutExpired as exc:  # the part dumped its threads' stacks at its budget (faulthandler)
            return "timeout", f"stopped after {budget + 15:.0f} s\n" + tail(exc.stderr)
        return ("ok", None) if proc.returncode == 0 else ("error", tail(proc.stderr))

    return measured_part(name, budget, run)


def tail(text: str | bytes | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a part's error output (a failure's reason is usually its last line)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "?").strip().splitlines()[-lines:])


def summarise(parts: dict) -> dict:
    """Ratios across parts (only those whose inputs were measured)."""
    peak = {n.split(":", 1)[1]: p["peak_mb"] for n, p in parts.items() if n.startswith("memory:") and "peak_mb" in p}
    out = {}
    if "finetune" in peak and peak["finetune"] > 0:
        for variant in ("input_tuning", "input_tuning_checkpointing", "input_tuning_checkpointing_stem_head"):
            if variant in peak:
                out[f"memory_{variant}_over_finetune"] = peak[variant] / peak["finetune"]
    return out


def machine(dry_run: bool) -> dict:
    import torch

    if not dry_run and not torch.cuda.is_available():
        fail("benchmarks/gpu.sh needs a CUDA GPU (torch sees none); use --dry-run on a CPU")
    name = torch.cuda.get_device_name(0) if not dry_run else f"{platform.processor() or platform.machine()} CPU (dry run)"
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "dry_run": dry_run, "cpus": os.cpu_count(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def output_path(given: str | None) -> Path:
    if given:
        return Path(given)
    return Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else Path("runs/gpu.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at 32 px, tiny sizes")
    parser.add_argument("path", nargs="?", default=None, help="output file (default: $OUT/gpu.json when $OUT is set, else runs/gpu.json)")
    parser.add_argument("--json", default=None, help="the same as PATH")
    parser.add_argument("--parts", default=",".join(BUDGETS), help="comma-separated subset of: " + ", ".join(BUDGETS))
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--part-json", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = DRY if args.dry_run else GPU
    if args.part:
        faulthandler.dump_traceback_later(max(1.0, args.budget), exit=False)  # where a part that overruns spends its time
        return run_part(args.part, settings, args.budget, Path(args.part_json))
    names = args.parts.split(",")
    unknown = [n for n in names if n not in BUDGETS]
    if unknown:  # before any part runs: a typo must not cost a GPU's minutes
        fail(f"--parts: unknown part {unknown[0]!r}; choose from {', '.join(BUDGETS)}")
    path = check_output(output_path(args.path or args.json))  # before torch is imported: a bad path fails at once
    report: dict = {**machine(args.dry_run), "settings": settings, "parts": {}}
    path = writable_output(path, report)
    started = time.perf_counter()
    for name in names:
        budget = BUDGETS[name] * (DRY_BUDGET_SCALE if args.dry_run else 1.0)
        report["parts"][name] = inline_part(name, settings, budget) if settings["in_process"] else spawn_part(name, args.dry_run, budget)
        report["summary"] = summarise(report["parts"])
        report["total_s"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(finite_only(report), indent=1, allow_nan=False))
        print(f"{name}: {report['parts'][name]['status']} in {report['parts'][name]['seconds']} s", flush=True)
    print(f"wrote {path}")


def fail(message: str) -> None:
    print(f"fedcl: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_output(path: Path) -> Path:
    """``path`` if a report can be written there: not a folder, and its nearest existing parent a writable folder
    (nothing is created yet: a refused run leaves nothing behind)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if path.is_dir():
        fail(f"cannot write the report to {path}: is a folder")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        fail(f"cannot write the report to {path}: {parent} is not a writable folder")
    return path


def writable_output(path: Path, report: dict) -> Path:
    """``path`` once the report's header is written there (before any part runs; :func:`check_output` came first)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(finite_only(report), indent=1, allow_nan=False))
    except OSError as exc:
        fail(f"cannot write the report to {path}: {exc.strerror or exc}")
    return path


def finite_only(value):
    """``value`` with every non-finite float replaced by None (a figure that is not a number is not reported)."""
    if isinstance(value, dict):
        return {k: finite_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_only(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


if __name__ == "__main__":
    main()
