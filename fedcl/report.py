"""``fedcl report``: a Markdown report with figures for one run, several runs or a sweep folder.

Every number in ``report.md`` is read from the runs' ``results.json``. A figure whose fields a
``results.json`` lacks is skipped with a note; an unreadable ``results.json`` is a :class:`FedclError`.
Needs the ``analysis`` extra (matplotlib, pandas).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcl.errors import FedclError

REPORT_FILE = "report.md"
#: runs up to this many get a section of their own; beyond it (a sweep) only the summary
MAX_RUN_SECTIONS = 8
HEADLINE = ("final_avg_accuracy", "avg_forgetting", "bwt")


class ReportError(FedclError):
    """A run folder or ``results.json`` that cannot be reported on."""


def find_runs(paths: list[str | Path]) -> list[Path]:
    """The folders holding a ``results.json``: each PATH itself, or every run below a sweep folder."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file() and path.name == "results.json":
            found.append(path.parent)
        elif (path / "results.json").is_file():
            found.append(path)
        elif path.is_dir() and (below := sorted(p.parent for p in path.rglob("results.json"))):
            found += below
        else:
            raise ReportError(f"no results.json in {path} (give a run folder, a results.json or a sweep folder)")
    return list(dict.fromkeys(found))


def read_run(folder: Path) -> dict[str, Any]:
    """A run's ``results.json``, checked for the fields every report uses."""
    path = folder / "results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None
    if not isinstance(results, dict):
        raise ReportError(f"malformed {path}: expected a JSON object")
    for key in ("method", "scenario", *HEADLINE):
        if key not in results:
            raise ReportError(f"malformed {path}: no '{key}'")
    for key in HEADLINE:
        if not _is_number(results[key]):
            raise ReportError(f"malformed {path}: '{key}' is {results[key]!r}, not a number")
    matrix = results.get("accuracy_matrix")
    if matrix is not None and not (isinstance(matrix, list) and matrix and all(isinstance(row, list) and row for row in matrix)
                                   and len({len(row) for row in matrix}) == 1 and all(_is_number(v) for row in matrix for v in row)):
        raise ReportError(f"malformed {path}: 'accuracy_matrix' is not a list of equally long rows of numbers")
    return results


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def has(results: dict[str, Any], dotted: str) -> bool:
    """Whether ``results`` has the (dotted) field, not null."""
    value: Any = results
    for part in dotted.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return False
        value = value[part]
    return True


class Report:
    """Markdown lines and the figures beside them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lines: list[str] = []
        self.figures: list[Path] = []

    def add(self, *lines: str) -> None:
        self.lines += lines

    def figure(self, name: str, caption: str, results: list[dict[str, Any]], needs: list[str], draw: Callable[[], Any],
               source: str = "") -> None:
        """Draw and save a figure, or note which fields it lacks; a field of the wrong shape is a ReportError."""
        import matplotlib.pyplot as plt

        missing = sorted({f for r in results for f in needs if not has(r, f)})
        if missing:
            self.add(f"_{caption}: skipped, results.json has no {', '.join(f'`{f}`' for f in missing)}._", "")
            return
        try:
            fig = draw()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ReportError(f"malformed results.json{f' ({source})' if source else ''}: cannot draw {caption}: {exc!r}") from None
        path = self.out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        self.figures.append(path)
        self.add(f"![{caption}]({name})", "", f"_{caption}._", "")

    def write(self) -> Path:
        path = self.out / REPORT_FILE
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text("\n".join(self.lines) + "\n")
        tmp.replace(path)
        return path


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def runs_table(names: list[str], runs: list[dict[str, Any]]) -> list[str]:
    """One row per run: its headline figures and bytes."""
    lines = ["| run | mode | method | scenario | final accuracy | forgetting | BWT | MB up | MB down | % of full-model FedAvg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in zip(names, runs):
        c = r.get("communication") or {}
        frac = c.get("fraction_of_full_model")
        mb = [_num(c[k] / 1e6, 3) if isinstance(c.get(k), (int, float)) else "-" for k in ("bytes_up", "bytes_down")]
        lines.append(f"| {name} | {r.get('mode', '-')} | {'+'.join([r['method'], *r.get('plugins', [])])} | {r['scenario']} | "
                     f"{_num(r['final_avg_accuracy'])} | {_num(r['avg_forgetting'])} | {_num(r['bwt'])} | {mb[0]} | {mb[1]} | "
                     f"{_num(100 * frac, 2) if frac else '-'} |")
    return lines


def matrix_table(matrix: list[list[float]]) -> list[str]:
    """The accuracy matrix as a Markdown table (rows: stream step, columns: task)."""
    lines = ["| after step | " + " | ".join(f"task {j}" for j in range(len(matrix[0]))) + " |", "|---" * (len(matrix[0]) + 1) + "|"]
    lines += [f"| {i} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for i, row in enumerate(matrix)]
    return lines


def run_section(report: Report, stem: str, name: str, results: dict[str, Any], source: str) -> None:
    """A run's accuracy matrix (table and heatmap) and, for a federated run, its per-round figures."""
    from fedcl import figures

    report.add(f"## {name}", "", f"`{source}`", "")
    if has(results, "accuracy_matrix"):
        report.add(*matrix_table(results["accuracy_matrix"]), "")
    report.figure(f"{stem}_accuracy_matrix.png", "accuracy matrix (row: after stream step, column: tested on task)", [results],
                  ["accuracy_matrix"], lambda: figures.plot_accuracy_matrix(results["accuracy_matrix"], name), source)
    if results.get("mode") != "federated":
        report.add("_Single-device run: no rounds, so no per-round figures._", "")
        return
    report.figure(f"{stem}_task_accuracy.png", "accuracy per task over rounds, with each client's tasks", [results],
                  ["accuracy_per_round", "communication.per_round", "per_client.task_schedule", "rounds"],
                  lambda: figures.plot_task_accuracy_over_rounds(results), source)
    report.figure(f"{stem}_bytes_per_round.png", "MB per round up and down against full-model FedAvg", [results],
                  ["communication.per_round", "communication.full_model_bytes_per_round"],
                  lambda: figures.plot_bytes_per_round(results), source)
    report.figure(f"{stem}_client_timeline.png", "each client's task per round, unavailable rounds, rejected and failed updates",
                  [results], ["communication.per_round", "per_client.task_schedule"],
                  lambda: figures.plot_client_timeline(results, unavailable_rounds(results)), source)


def unavailable_rounds(results: dict[str, Any]) -> dict[int, list[int]] | None:
    """Client -> rounds it was unavailable, recomputed from the config's device profiles (deterministic in seed,
    client and round); None unless the recomputation matches every round's ``clients_unavailable`` count."""
    from fedcl.federation.profiles import PROFILES, client_profile, is_unavailable

    try:
        seed, profiles = results["config"]["seed"], results["config"]["federation"]["device_profiles"]
        if not all(p in PROFILES for p in profiles):
            return None
        found: dict[int, list[int]] = {}
        for row in results["communication"]["per_round"]:
            rnd = row["round"]
            down = [int(c) for c in row["per_client_task"] if is_unavailable(client_profile(profiles, int(c), seed), int(c), rnd, seed)]
            if len(down) != row.get("clients_unavailable", -1):
                return None
            for c in down:
                found.setdefault(c, []).append(rnd)
        return found
    except (KeyError, TypeError, ValueError):
        return None


def run_names(folders: list[Path]) -> list[str]:
    """Short unique names: each folder's path below the folders' common parent."""
    if len(folders) == 1:
        return [folders[0].resolve().name]
    resolved = [f.resolve() for f in folders]
    common = Path(os.path.commonpath(resolved))
    return [str(r.relative_to(common)) for r in resolved]


def runs_frame(folders: list[Path], runs: list[dict[str, Any]], names: list[str]):
    """One row per run (:func:`fedcl.analysis.run_row`); ``method`` names the setting: a sweep cell's method, or
    the settings that differ between the runs, so that runs differing only by seed share it."""
    import pandas as pd

    from fedcl.analysis import run_row, setting_names

    labels = [json.loads((f / "cell.json").read_text()) if (f / "cell.json").is_file() else {} for f in folders]
    fallback = ["+".join([r["method"], *r.get("plugins", [])]) for r in runs]
    settings = setting_names([r.get("config") or {} for r in runs], fallback)
    rows = []
    for folder, r, name, label, setting in zip(folders, runs, names, labels, settings):
        row = run_row({**r, "communication": r.get("communication") or {}}, {"method": label.get("method", setting)})
        rows.append({**row, "run": name, "path": str(folder)})
    return pd.DataFrame(rows)


def summary_section(report: Report, frame) -> None:
    """Mean, sample std and 95 % interval over seeds per setting, and accuracy against MB."""
    from fedcl import figures
    from fedcl.analysis import summarize_runs, summary_markdown

    summary = summarize_runs(frame)
    report.add("## Over seeds", "", "Runs that differ only by seed are grouped: mean ± sample standard deviation (ddof=1), "
               "and the 95 % t interval of the final accuracy.", "", summary_markdown(summary), "")
    if not (frame["total_mb"] > 0).all():
        report.add("_accuracy against MB: skipped, some runs exchanged no bytes (single-device runs)._", "")
        return
    for partition in dict.fromkeys(summary["partition"]):
        part = summary[summary["partition"] == partition]
        report.figure(f"accuracy_vs_mb_{partition}.png", f"final accuracy against total MB exchanged ({partition}; error bars: "
                      "sample std over seeds)", [], [], lambda part=part, p=partition: figures.plot_accuracy_vs_mb(part, p))
        report.figure(f"forgetting_{partition}.png", f"average forgetting ({partition}; error bars: sample std over seeds)",
                      [], [], lambda part=part, p=partition: figures.plot_forgetting(part, p))
    matrices_section(report, frame)


def matrices_section(report: Report, frame) -> None:
    """Per scenario, the accuracy matrix of every setting (first partition, lowest seed) as small multiples."""
    from fedcl import figures

    first_partition, first_seed = frame["partition"].iloc[0], frame["seed"].min()
    for scenario in dict.fromkeys(frame["scenario"]):
        chosen = frame[(frame["scenario"] == scenario) & (frame["partition"] == first_partition) & (frame["seed"] == first_seed)]
        if len(chosen) < 2:
            continue
        matrices = {r["method"]: read_run(Path(r["path"]))["accuracy_matrix"] for _, r in chosen.iterrows()}
        report.figure(f"accuracy_matrices_{scenario}.png", f"accuracy matrices, {scenario} ({first_partition}, seed {first_seed})",
                      [], [], lambda m=matrices: figures.plot_accuracy_matrices(m))


def write_report(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """Write ``report.md`` and its figures into ``out`` (default: ``<PATH>/report`` for one PATH, else ``report``)."""
    from fedcl.optional import require_analysis

    require_analysis("fedcl report")
    folders = find_runs(paths)
    runs = [read_run(f) for f in folders]
    out_dir = Path(out) if out else (Path(paths[0]) / "report" if len(paths) == 1 and Path(paths[0]).is_dir() else Path("report"))
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir)
    names = run_names(folders)
    report.add("# fedcl report", "", f"{len(runs)} run(s) from {', '.join(f'`{p}`' for p in paths)}. "
               "Every number below is read from the runs' `results.json`.", "", *runs_table(names, runs), "")
    if len(runs) > 1:
        summary_section(report, runs_frame(folders, runs, names))
    if len(runs) <= MAX_RUN_SECTIONS:
        for i, (folder, name, results) in enumerate(zip(folders, names, runs)):
            run_section(report, f"run{i}", name, results, str(folder / "results.json"))
    else:
        report.add(f"_{len(runs)} runs: per-run figures are left out; run `fedcl report <run folder>` for one run._", "")
    return report.write()
