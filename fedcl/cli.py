"""The ``fedcl`` command line: ``fedcl train``, ``simulate``, ``report``, ``list``, ``certs``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from fedcl.errors import FedclError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="TOML/JSON config file (or a results.json to re-run)")
    parser.add_argument("--preset", "-p", help="named preset applied before the config file (see 'fedcl list')")
    parser.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set train.epochs=2 (repeatable)")
    parser.add_argument("--out", "-o", default=None, help="output directory for results.json (default runs/<preset or config>)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the final line (no progress bar, table or logs)")
    parser.add_argument("--verbose", "-v", action="store_true", help="show Flower's log lines instead of the progress bar")
    parser.add_argument("--log", choices=("none", "tensorboard"), default="none",
                        help="also write the run's scalars for an experiment tracker (needs the 'tracking' extra)")


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes give one line, like every other bad input (not argparse's usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"fedcl: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fedcl", description="Federated continual learning with frozen backbones and learned input transformations.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="single-device continual learning on a task stream")
    _add_config_args(train)
    simulate = sub.add_parser("simulate", help="federated continual learning on Flower's Ray simulation engine (default preset: federated)")
    _add_config_args(simulate)
    simulate.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output folder (same config)")
    report = sub.add_parser("report", help="a Markdown report with figures of run folders or a sweep folder (needs the 'analysis' extra)")
    report.add_argument("paths", nargs="+", metavar="PATH", help="a run folder (with results.json), several, or a sweep folder")
    report.add_argument("--out", "-o", default=None, help="folder for report.md and its figures (default: PATH/report for one PATH)")
    sub.add_parser("list", help="list presets and registered backbones, transforms, heads, methods, plugins, datasets")
    certs = sub.add_parser("certs", help="create a CA, a SuperLink TLS certificate and SuperNode authentication keys")
    certs.add_argument("--out", default="certificates", help="output folder (default: certificates)")
    certs.add_argument("--hosts", required=True, help="comma-separated host names / IP addresses SuperNodes use to reach the SuperLink")
    certs.add_argument("--nodes", type=int, default=0, help="how many SuperNode key pairs to create")
    certs.add_argument("--days", type=int, default=365, help="validity in days")
    certs.add_argument("--overwrite", action="store_true", help="replace an existing certificate authority")
    return parser


def _default_out(args: argparse.Namespace) -> Path:
    stem = args.preset or (Path(args.config).stem if args.config else "default")
    return Path("runs") / stem


def _finish(args: argparse.Namespace, results: dict, path: Path, print_summary) -> None:
    """Tracker files, then the summary table (or, with ``--quiet``, the final line)."""
    from fedcl.console import final_line
    from fedcl.tracking import track

    written = track(args.log, results, path.parent)
    if args.quiet:
        print(final_line(results, path))
        return
    print_summary(results, path)
    if written:
        print(f"{args.log}: {written}")


def cmd_train(args: argparse.Namespace) -> int:
    from fedcl.config import build_config
    from fedcl.console import ProgressBar, print_header, print_single_device_summary
    from fedcl.federation.settings import FedRunConfig
    from fedcl.outputs import prepare_out_dir
    from fedcl.tracking import check_tracker

    check_tracker(args.log)
    # The federated schema, so one config file serves both single-device and federated runs.
    cfg = build_config(args.preset, args.config, args.overrides, schema=FedRunConfig)
    out = prepare_out_dir(args.out or _default_out(args))  # before any work: an unwritable --out fails now
    from fedcl.runner import run_single_device, write_results  # the model code (seconds of imports), once the input is good
    with ProgressBar(cfg.data.num_tasks, "tasks", enabled=not args.quiet) as bar:
        if not args.quiet:
            print_header(cfg, bar.console)

        def task_done(task: int, row: list[float]) -> None:
            bar.print(f"  task {task + 1}/{cfg.data.num_tasks} done | accuracy per task: {' '.join(f'{a:.2f}' for a in row)}")
            bar.update(task + 1, sum(row) / len(row))

        results = run_single_device(cfg, on_task_end=task_done)
    path = write_results(results, out)
    _finish(args, results, path, print_single_device_summary)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from fedcl.config import build_config
    from fedcl.console import ProgressBar, print_federated_summary
    from fedcl.federation.settings import FedRunConfig
    from fedcl.federation.simulation import run_federated
    from fedcl.progress import set_round_sink
    from fedcl.tracking import check_tracker

    check_tracker(args.log)
    args.preset = args.preset or (None if args.config else "federated")
    overrides = args.overrides + (["federation.resume=true"] if args.resume else [])
    cfg = build_config(args.preset, args.config, overrides, schema=FedRunConfig)
    out = Path(args.out or _default_out(args))
    with ProgressBar(cfg.num_rounds, "rounds", enabled=not (args.quiet or args.verbose)) as bar:
        set_round_sink(lambda done, total, accuracy: bar.update(done, accuracy))
        try:
            results = run_federated(cfg, out, quiet=not args.verbose)
        finally:
            set_round_sink(None)
    _finish(args, results, out / "results.json", print_federated_summary)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fedcl.optional import require_analysis

    require_analysis("fedcl report")
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever display there is
    from fedcl.report import write_report

    path = write_report(args.paths, args.out)
    print(f"report: {path}")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from fedcl.deploy.certificates import generate

    certs = generate(args.out, [h.strip() for h in args.hosts.split(",") if h.strip()], args.nodes, args.days, args.overwrite)
    print(f"CA: {certs.ca_cert} (keep {Path(args.out) / 'ca.key'} offline)")
    print(f"SuperLink: --ssl-ca-certfile {certs.ca_cert} --ssl-certfile {certs.server_cert} --ssl-keyfile {certs.server_key}")
    for private, public in certs.node_keys:
        print(f"SuperNode: --auth-supernode-private-key {private}   register: flwr supernode register {public} <superlink>")
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    from fedcl.backbones import backbone_names
    from fedcl.config import preset_names
    from fedcl.data import dataset_names
    from fedcl.heads import head_names
    from fedcl.methods import method_names, plugin_names
    from fedcl.transforms import transform_names

    backbones = [n for n in backbone_names() if not n.endswith(":")] + ["timm:<model>", "torchvision:<model>"]
    for title, names in [("presets", preset_names()), ("backbones", backbones), ("transforms", transform_names()),
                         ("heads", head_names()), ("methods", method_names()), ("plugins", plugin_names()), ("datasets", dataset_names())]:
        print(f"{title:11s} {', '.join(names)}")
    return 0


class RunInterrupted(BaseException):
    """SIGTERM or SIGINT: stops the run wherever it is (a BaseException, so no ``except Exception`` swallows it)."""


def _interrupt(signum: int, _frame) -> None:
    logging.disable(logging.CRITICAL)  # the run is stopping: no library's shutdown noise around the one line
    raise RunInterrupted(signal.Signals(signum).name)


#: failures of the environment (files, numbers, devices) that reach the command line as one line
_ENVIRONMENT_ERRORS = (OSError, OverflowError, MemoryError, RecursionError)
#: words in torch's messages for numbers too large for C integers and for missing devices
_ENVIRONMENT_WORDS = ("overflow", "cuda", "nvidia driver", "out of memory")


def _from_environment(exc: BaseException) -> bool:
    """A last resort: errors that bad input can provoke deep inside libraries (checks upstream should catch them first)."""
    if isinstance(exc, _ENVIRONMENT_ERRORS):
        return True
    return isinstance(exc, (ValueError, RuntimeError, AssertionError)) and any(w in str(exc).lower() for w in _ENVIRONMENT_WORDS)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _run(args: argparse.Namespace) -> int:
    commands = {"train": cmd_train, "simulate": cmd_simulate, "report": cmd_report, "list": cmd_list, "certs": cmd_certs}
    try:
        return commands[args.command](args)
    except FedclError as exc:
        print(f"fedcl: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (*_ENVIRONMENT_ERRORS, ValueError, RuntimeError, AssertionError) as exc:
        if os.environ.get("FEDCL_DEBUG") or not _from_environment(exc):
            raise
        hint = "a number in the config is too large for its use: " if "overflow" in str(exc).lower() else ""
        print(f"fedcl: error: {hint}{exc.__class__.__name__}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if exc.code != signal.SIGTERM:
            raise
        return _interrupted(args, "SIGTERM")  # Ray's driver turns SIGTERM into sys.exit(15)
    except (KeyboardInterrupt, RunInterrupted) as exc:
        return _interrupted(args, str(exc) if isinstance(exc, RunInterrupted) else "SIGINT")


def _interrupted(args: argparse.Namespace, name: str) -> int:
    kept = " (completed rounds are kept in its checkpoint: continue with --resume)" if args.command == "simulate" else ""
    print(f"fedcl: error: interrupted by {name}; the run stopped{kept}", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a one-line usage error
        return int(exc.code or 0)
    in_main_thread = threading.current_thread() is threading.main_thread()
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, _interrupt) for s in stops} if in_main_thread else {}
    try:
        code = _run(args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if code == 130 and any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        sys.stderr.flush()
        os._exit(code)  # a ServerApp thread still waits on its clients: files are written atomically, so stop now
    return code


if __name__ == "__main__":
    sys.exit(main())
