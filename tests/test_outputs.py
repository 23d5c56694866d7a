"""Nothing already on disk is lost: a run that fails (bad updates, NaN, a file it cannot write), is killed
(SIGKILL at a random point) or is stopped (SIGTERM) leaves the previous run's files byte for byte."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import SafetensorError, safe_open

from fedcl.cli import main
from fedcl.federation.checkpoint import CHECKPOINT_FILE, STAGED_CHECKPOINT_FILE
from fedcl.outputs import prepare_out_dir, staged, write_text_atomic
from helpers import set_args
from tests.cases_reliability import INLINE

#: a replay buffer gives the simulated clients state files on disk, which must survive too
RUN = [*INLINE, "method.plugins.replay.buffer_size=8"]


def _argv(out: Path, *overrides: str) -> list[str]:
    return ["simulate", "-q", "-p", "fedsmoke", "-o", str(out), *set_args([*RUN, *overrides])]


def _hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder that holds a good run (results, global model, checkpoint, client state) and its files' hashes."""
    out = tmp_path_factory.mktemp("finished") / "out"
    assert main(_argv(out)) == 0
    hashes = _hashes(out)
    assert {"results.json", "global_model.safetensors", CHECKPOINT_FILE} <= set(hashes)
    assert any(name.startswith("client_state/") for name in hashes)
    return out, hashes


def _unwritable_results(out: Path) -> list[str]:
    """The run trains every round, then cannot write its results (a folder sits where its file must go)."""
    staged(out / "results.json").mkdir()
    return []


FAILURES = {
    "every update rejected": lambda out: ["federation.max_update_norm=1e-30"],
    "NaN global model": lambda out: ["federation.strategy=fedadam", "federation.server_lr=1e300"],
    "results cannot be written": _unwritable_results,
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_run_leaves_the_previous_files_byte_identical(failure, finished, tmp_path, capsys):
    source, hashes = finished
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(source), str(out)], check=True)
    assert main(_argv(out, *FAILURES[failure](out))) == 2
    assert "fedcl: error:" in capsys.readouterr().err
    after = _hashes(out)
    assert {name: after.get(name) for name in hashes} == hashes


def _python_cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fedcl.cli", *_argv(out), *extra]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_a_run_killed_at_a_random_point_leaves_the_previous_files_byte_identical(finished, tmp_path):
    source, hashes = finished
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(0.0, 3.0)  # after the run's first checkpoint: rounds or the final writes
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(source), str(out)], check=True)
    proc = subprocess.Popen(_python_cli(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while _staged_round(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the run has written something of its own before it is killed
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    after = _hashes(out)
    # results.json is written last: once it is replaced the run has committed (killed or not in its final clean-up)
    committed = proc.returncode == 0 or after.get("results.json") != hashes["results.json"]
    assert committed or {name: after.get(name) for name in hashes} == hashes, f"seed {seed}, killed after {delay:.1f} s"


def _staged_round(out: Path) -> int:
    try:
        with safe_open(str(out / STAGED_CHECKPOINT_FILE), framework="pt") as f:
            return int(f.metadata()["round"])
    except (OSError, KeyError, ValueError, SafetensorError):  # not written yet, or being replaced
        return 0


def test_sigterm_ends_the_run_with_one_line_and_keeps_its_last_checkpoint(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_python_cli(out, "--set", "federation.rounds_per_task=4"), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while _staged_round(out) < 1:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedcl: error: interrupted by SIGTERM"), err
    assert _staged_round(out) >= 1 and not (out / "results.json").exists()


def test_out_is_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(Exception, match="is a file, not a folder"):
        prepare_out_dir(tmp_path / "file")
    with pytest.raises(Exception, match="lies under"):
        prepare_out_dir(tmp_path / "file" / "run")
    assert (tmp_path / "file").read_text() == "keep me"
    assert prepare_out_dir(tmp_path / "new" / "run").is_dir()


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "results.json", "old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        from fedcl.outputs import write_atomic

        write_atomic(path, broken)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
