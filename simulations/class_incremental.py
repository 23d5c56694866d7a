"""Class-incremental table: statistical heads on frozen features and after first-session adaptation,
input tuning + linear head, replay, and a joint linear probe (single device).

    PYTHONPATH=$PWD .venv/bin/python simulations/class_incremental.py \
        --grid simulations/class_incremental.toml --out runs/class_incremental [--settings fmnist64] [--seeds 0,1,2]

Statistical rows go through the real learner (``Learner.train_experience``: one forward pass per
sample, float64 sums); all heads of a row group share that one pass through a fan-out head
(:class:`HeadBundle`), so each head sees exactly the statistics it would see alone. Test features
are encoded once the transform is final and reused by every head. One results file per
(setting, group, seed) under ``--out``; existing ones are reused, so an interrupted grid resumes.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

from fedcl.config import build_config
from fedcl.builder import make_backbone, make_benchmark, make_learner, make_method, make_model
from fedcl.heads import create_head
from fedcl.heads.base import Head
from fedcl.heads.statistics import packed_size
from fedcl.metrics import average_forgetting

MB = 1e6


class HeadBundle(Head):
    """Fans ``observe`` out to several statistical heads and times each head's accumulation."""

    gathers_statistics = True

    def __init__(self, heads: dict[str, Head], keep_features: bool = False) -> None:
        first = next(iter(heads.values()))
        super().__init__(first.feature_dim, first.num_classes, first.task_classes)
        self.heads = torch.nn.ModuleDict(heads)
        self.observe_s = {name: 0.0 for name in heads}
        #: the frozen training features, kept by this measurement only, for the joint probe
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if keep_features else None

    def observe(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if self.kept is not None:
            self.kept.append((features.cpu().clone(), labels.cpu().clone()))
        for name, head in self.heads.items():
            start = time.perf_counter()
            head.observe(features, labels)
            self.observe_s[name] += time.perf_counter() - start

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return next(iter(self.heads.values()))(features, task_ids)


def average_incremental_accuracy(matrix: np.ndarray) -> float:
    """Mean over steps i of the mean accuracy on the tasks seen so far (R[i][0..i])."""
    return float(np.mean([matrix[i, : i + 1].mean() for i in range(len(matrix))]))


def summary(matrix: np.ndarray, client_s: float, mb32: float, mb64: float | None = None) -> dict:
    return {"final_acc": float(matrix[-1].mean()), "avg_inc_acc": average_incremental_accuracy(matrix),
            "forgetting": average_forgetting(matrix), "client_s": client_s, "mb_fp32": mb32,
            "mb_fp64": mb32 if mb64 is None else mb64, "matrix": matrix.tolist()}


def statistics_mb(head: Head, num_tasks: int, bytes_per_value: int) -> float:
    """One upload per task of counts + class sums (= C for ridge) + packed G."""
    values = head.counts.numel() + head.sums.numel() + (packed_size(head.statistic_dim) if head.uses_gram else 0)
    return num_tasks * values * bytes_per_value / MB


def encode(learner, experiences) -> list[torch.Tensor]:
    with torch.no_grad():
        return [torch.cat([learner.model.encode(x, ids).float() for x, _, ids in
                           learner._image_batches(e, learner.settings.eval_batch_size, shuffle=False)]) for e in experiences]


def accuracies(learner, head: Head, features: list[torch.Tensor], benchmark) -> list[float]:
    out = []
    with torch.no_grad():
        for f, e in zip(features, benchmark.test_stream):
            logits = head(f).float().masked_fill(~learner.eval_mask(e), float("-inf"))
            out.append(float((logits.argmax(1).cpu() == e.data.labels).float().mean()))
    return out


def statistical_group(cfg, backbone, head_specs: dict, adapt_transform: str | None, rounds_per_task: int):
    """Every statistical head of one group (frozen features, or first-session adaptation with a transform)."""
    benchmark = make_benchmark(cfg)
    method = make_method(cfg)
    model = make_model(cfg, benchmark, method, backbone)
    dim, k = model.head.feature_dim, benchmark.num_classes
    heads = {n: create_head(s["name"], dim, k, benchmark.task_classes, **s.get("options", {})) for n, s in head_specs.items()}
    bundle = HeadBundle(heads, keep_features=adapt_transform is None)
    model.head = bundle  # before the learner: input tuning swaps it for a temporary linear head while adapting
    learner = make_learner(cfg, model, method, benchmark, torch.device("cpu"))
    adapt_mb = sum(p.numel() for g in learner.param_groups for p in g["params"]) * 4 * rounds_per_task / MB
    rows = {n: [] for n in head_specs}
    train_s, test_features = 0.0, None
    for experience in benchmark.train_stream:
        train_s += learner.train_experience(experience)["train_time_s"]
        adapting = getattr(method, "adapting", False)
        if test_features is None or adapting:
            test_features = encode(learner, benchmark.test_stream)
        for name in head_specs:
            head = bundle.heads[name] if model.head is bundle else model.head
            rows[name].append(accuracies(learner, head, test_features, benchmark))
    shared_s = train_s - sum(bundle.observe_s.values())
    adapt_tasks = getattr(method, "adapt_tasks", 0) if adapt_transform else 0
    results = {n: summary(np.array(rows[n]), shared_s + bundle.observe_s[n],
                          adapt_tasks * adapt_mb + statistics_mb(bundle.heads[n], benchmark.num_tasks, 4),
                          adapt_tasks * adapt_mb + statistics_mb(bundle.heads[n], benchmark.num_tasks, 8)) for n in head_specs}
    return results, learner, bundle, benchmark, test_features


def joint_probe(bundle: HeadBundle, benchmark, test_features) -> dict:
    """Logistic regression on all classes' frozen features at once (the usual upper bound)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    x = torch.cat([f for f, _ in bundle.kept]).numpy()
    y = torch.cat([label for _, label in bundle.kept]).numpy()
    scaler = StandardScaler().fit(x)
    probe = LogisticRegression(max_iter=500).fit(scaler.transform(x), y)
    accs = [float((probe.predict(scaler.transform(f.numpy())) == e.data.labels.numpy()).mean())
            for f, e in zip(test_features, benchmark.test_stream)]
    matrix = np.array([accs])
    return {**summary(matrix, time.perf_counter() - start, float("nan")), "avg_inc_acc": float("nan"), "forgetting": float("nan")}


def sensitivity(bundle: HeadBundle, learner, benchmark, test_features, sweep: dict) -> dict:
    """Final accuracy of LDA / ridge re-solved from the same sums with other shrinkage / lambda values."""
    out = {}
    for name, head in bundle.heads.items():
        options = {"lda": [("shrinkage", v) for v in sweep["lda"]], "ridge": [("regularization_scale", v) for v in sweep["ridge"]]}
        kind = type(head).__name__
        key = "lda" if kind == "LinearDiscriminant" else "ridge" if kind == "RidgeHead" else None
        if key is None or getattr(head, "projection_dim", 0):
            continue
        base = {"projection_dim": head.projection_dim} if key == "ridge" else {}
        chosen = head.chosen_shrinkage() if key == "lda" else head.chosen_regularization()
        out[f"{name}:rule"] = {"value": chosen, "final_acc": float(np.mean(accuracies(learner, head, test_features, benchmark)))}
        for option, value in options[key]:
            other = create_head(key, head.feature_dim, head.num_classes, head.task_classes, **base, **{option: value})
            other.load_state_dict(head.state_dict())
            out[f"{name}:{option}={value}"] = {"value": value, "final_acc": float(np.mean(accuracies(learner, other, test_features, benchmark)))}
    return out


def trained_row(cfg, backbone, rounds_per_task: int) -> dict:
    """A gradient-trained run (input tuning + linear head, replay) through the real learner."""
    benchmark = make_benchmark(cfg)
    method = make_method(cfg)
    model = make_model(cfg, benchmark, method, backbone)
    learner = make_learner(cfg, model, method, benchmark, torch.device("cpu"))
    rows, train_s = [], 0.0
    for experience in learner.stream(benchmark.train_stream):
        train_s += learner.train_experience(experience)["train_time_s"]
        rows.append(learner.evaluate(benchmark.test_stream))
    numel = sum(p.numel() for g in learner.param_groups for p in g["params"])
    return summary(np.array(rows), train_s, benchmark.num_tasks * rounds_per_task * numel * 4 / MB)


# ---------------------------------------------------------------------- grid and report
def config_for(setting: dict, seed: int, extra: list[str]):
    return build_config(setting.get("preset", "input_tuning"), None, [*setting.get("overrides", []), f"seed={seed}", *extra])


def run_setting(name: str, setting: dict, grid: dict, seed: int, out: Path, backbones: dict, only: list[str] | None = None) -> None:
    """Every row group of one setting and seed, each saved as soon as it is done."""
    rpt = grid.get("rounds_per_task", 3)
    groups = {"frozen": ["method.name=head_only"]}
    for transform in setting.get("adaptations", []):
        groups[f"adapted_{transform}"] = ["method.name=input_tuning", f"model.transform.name={transform}",
                                          f"method.options.adapt_tasks={grid.get('adapt_tasks', 1)}"]
    if setting.get("trained", True):
        groups.update({f"trained_{row}": overrides for row, overrides in grid["trained"].items()})
    for group, extra in groups.items():
        path = out / name / f"{group}-seed{seed}.json"
        if path.exists() or (only and group not in only):
            continue
        cfg = config_for(setting, seed, extra)
        size = cfg.data.image_size
        backbones.setdefault(size, make_backbone(cfg))
        if group.startswith("trained_"):
            result = {group.removeprefix("trained_"): trained_row(cfg, backbones[size], rpt)}
        else:
            result, learner, bundle, benchmark, features = statistical_group(cfg, backbones[size], grid["heads"], None if group == "frozen" else group, rpt)
            result = {f"{group}:{k}": v for k, v in result.items()}
            if group == "frozen":
                result["joint_probe"] = joint_probe(bundle, benchmark, features)
                result["sensitivity"] = sensitivity(bundle, learner, benchmark, features, grid["sweep"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        print(f"{name} seed {seed} {group}: " + ", ".join(f"{k}={v['final_acc']:.3f}" for k, v in result.items() if "final_acc" in v), flush=True)


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    std = np.std(values, ddof=1) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.3f} ± {std:.3f}"


COLUMNS = [("final_acc", "final acc"), ("avg_inc_acc", "avg incremental acc"), ("forgetting", "forgetting")]


def table(name: str, results: list[dict]) -> list[str]:
    """Markdown rows: mean ± sample std (ddof=1) over seeds, per configuration."""
    rows = sorted({k for r in results for k, v in r.items() if "final_acc" in v}, key=lambda k: (k.split(":")[0], k))
    lines = [f"### {name} ({len(results)} seeds)", "", "| configuration | final acc | avg incremental acc | forgetting | client s | MB sent fp32 / fp64 |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        got = [r[row] for r in results if row in r]
        cells = [mean_std([g[c] for g in got]) for c, _ in COLUMNS]
        mb = "-" if got[0]["mb_fp32"] != got[0]["mb_fp32"] else f"{got[0]['mb_fp32']:.2f} / {got[0]['mb_fp64']:.2f}"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {np.mean([g['client_s'] for g in got]):.1f} | {mb} |")
    sweep = sorted({k for r in results for k in r.get("sensitivity", {})})
    if sweep:
        lines += ["", "| head: rule or value | chosen value (mean) | final acc |", "|---|---|---|"]
        for key in sweep:
            got = [r["sensitivity"][key] for r in results if key in r.get("sensitivity", {})]
            lines.append(f"| {key} | {np.mean([g['value'] for g in got]):.4g} | {mean_std([g['final_acc'] for g in got])} |")
    return lines + [""]


def write_tables(out: Path, names: list[str]) -> str:
    lines = []
    for name in names:
        by_seed: dict[str, dict] = {}
        for path in sorted((out / name).glob("*-seed*.json")):
            by_seed.setdefault(path.stem.rsplit("-seed", 1)[1], {}).update(json.loads(path.read_text()))
        if by_seed:
            lines += table(name, list(by_seed.values()))
    text = "\n".join(lines)
    (out / "table.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="simulations/class_incremental.toml")
    parser.add_argument("--out", default="runs/class_incremental")
    parser.add_argument("--settings", default=None, help="comma-separated subset of the grid's settings")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the grid's)")
    parser.add_argument("--groups", default=None, help="comma-separated row groups (frozen, adapted_<transform>, trained_<row>)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = tomllib.loads(Path(args.grid).read_text())
    names = args.settings.split(",") if args.settings else list(grid["settings"])
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else grid["seeds"]
    out, backbones = Path(args.out), {}
    for name in names:
        for seed in seeds:
            run_setting(name, grid["settings"][name], grid, seed, out, backbones, args.groups.split(",") if args.groups else None)
    print(write_tables(out, names))


if __name__ == "__main__":
    main()
