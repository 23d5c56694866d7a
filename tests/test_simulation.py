"""Real federated runs on Flower's Ray simulation engine (3 clients, 32 px, a few samples), one of them killed and resumed."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fedcl.config import build_config
from fedcl.deploy.local import free_port
from fedcl.builder import schedule_for
from fedcl.federation.checkpoint import STAGED_CHECKPOINT_FILE
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_ray_simulation
from fedcl.runner import without_wall_clock
from fedcl.state_files import GLOBAL_MODEL_FILE, load_state_file
from helpers import set_args


#: a crash of a sampled client in rounds 1 and 3 (the seed samples clients 1, 2 in round 1 and 0, 2 in round 3)
CRASHES = {1: "1", 3: "2"}
OVERRIDES = ["federation.boundary_jitter=1", "federation.device_profiles=[\"laptop\", \"jetson_nano\"]", "federation.fraction_train=0.67",
             f"federation.fault_schedule={json.dumps([f'{r}:{pid}' for r, pid in CRASHES.items()])}",
             # state that a resumed run must restore: the clients' replay buffers and EWC, the server's Adam moments
             "method.plugins.replay.buffer_size=12", "method.plugins.ewc.fisher_samples=2", "federation.strategy=fedadam"]
#: the checkpoint after which test_a_run_killed_inline_resumes_on_another_ray_cluster kills its run
KILL_AFTER = 2


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sim")


@pytest.fixture(scope="module")
def run(run_dir):
    cfg = build_config("fedsmoke", None, OVERRIDES + ["federation.ray_num_cpus=2"], schema=FedRunConfig)
    return cfg, run_ray_simulation(cfg, run_dir)


def test_results_schema_and_accuracy_above_chance(run):
    cfg, r = run
    for key in ("num_clients", "rounds", "communication", "per_client", "simulated_round_time_s", "accuracy_matrix",
                "final_avg_accuracy", "avg_forgetting", "bwt", "trainable_params", "backbone_params", "wall_time_s"):
        assert key in r
    for key in ("bytes_up", "bytes_down", "per_round", "full_model_bytes_per_round"):
        assert key in r["communication"]
    assert r["num_clients"] == 3 and r["rounds"] == 4 and len(r["accuracy_matrix"]) == 2
    assert r["final_avg_accuracy"] > 0.5  # 4 classes seen: chance is 0.25
    assert set(r["per_client"]["accuracy"]) == {"0", "1", "2"}
    assert all(a > 0.4 for a in r["per_client"]["accuracy"].values())
    assert len(r["simulated_round_time_s"]) == 4 and all(t > 0 for t in r["simulated_round_time_s"])


def test_a_crashing_client_on_ray_costs_its_update_not_the_run(run):
    """On Flower's Ray engine a ClientApp that raises gives the server an error reply: that client's update is
    missing from the round, the others are aggregated and the run goes on."""
    cfg, r = run
    rows = {row["round"]: row for row in r["communication"]["per_round"]}
    assert [rows[n]["clients_failed"] for n in range(1, 5)] == [int(n in CRASHES) for n in range(1, 5)]
    assert all(rows[n]["clients_trained"] == rows[n]["clients_sampled"] - (n in CRASHES) for n in range(1, 5))
    assert all(rows[n]["clients_timed_out"] == 0 for n in range(1, 5))
    assert sorted(x for x in r["rejected_updates"] if "crashed" in x) == [
        f"round {n} client {pid}: client error: InjectedFault: client {pid} crashed in round {n} (injected fault)" for n, pid in CRASHES.items()]


def test_only_lightweight_state_travels_and_backbones_stay_identical(run):
    cfg, r = run
    trainable = r["trainable_bytes"]
    # every client's backbone fingerprint matched the server's after training: only the injected crashes were refused
    assert all("crashed" in x for x in r["rejected_updates"])
    for row in r["communication"]["per_round"]:
        assert row["clients_trained"] >= 1
        for direction in ("per_client_down", "per_client_up"):
            for nbytes in row[direction].values():
                if nbytes > 1000:  # unavailable clients reply with metrics only
                    assert trainable < nbytes < trainable + 4000
    c = r["communication"]
    assert c["bytes_up"] == sum(row["bytes_up"] for row in c["per_round"]) > 0
    assert c["bytes_down"] == sum(sum(row["per_client_down"].values()) for row in c["per_round"]) > 0
    assert (c["bytes_up"] + c["bytes_down"]) / c["full_model_bytes_total"] < 0.025
    assert all(b > r["backbone_bytes"] for b in c["full_model_bytes_per_round"])


def test_per_client_task_schedule_is_honoured(run):
    cfg, r = run
    schedule = schedule_for(cfg)
    for row in r["communication"]["per_round"]:
        for pid, task in row["per_client_task"].items():
            assert task == schedule.task(int(pid), row["round"])
    starts = {tuple(v["starts"]) for v in r["per_client"]["task_schedule"].values()}
    assert len(starts) > 1, "the fixture should exercise clients switching tasks at different rounds"


def test_a_run_killed_inline_resumes_on_another_ray_cluster_to_the_same_results(run, run_dir, tmp_path):
    """The fixture ran on its own 2-CPU Ray cluster (two workers). The same run through the command line on the
    in-process backend is killed (SIGKILL) after its round-2 checkpoint, and resumed with ``--resume`` attached to a
    cluster started with ``ray start`` and one CPU (one worker runs the clients in another order). Backend, cluster,
    worker count and the kill are execution details: same seed, same results, bit for bit (so the in-process backend
    and Ray also agree: rounds 1 and 2, with a crashing client, ran in process here and on Ray in the fixture)."""
    args = [sys.executable, "-m", "fedcl", "simulate", "-q", "-p", "fedsmoke", *set_args(OVERRIDES)]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--set", "federation.backend=inline", "-o", str(killed)])
    try:
        deadline = time.monotonic() + 600
        while _checkpoint_round(killed / STAGED_CHECKPOINT_FILE) < KILL_AFTER:  # a run in progress checkpoints under the staged name
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "results.json").exists()
    killed_after = _checkpoint_round(killed / STAGED_CHECKPOINT_FILE)  # KILL_AFTER, or a later round on a busy machine
    assert KILL_AFTER <= killed_after < run[0].num_rounds
    port = free_port()
    with one_cpu_ray_cluster(port, tmp_path):
        resumed = subprocess.run([*args, "-o", str(killed), "--resume", "--set", f"federation.ray_address=127.0.0.1:{port}"],
                                 timeout=600, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    whole = without_wall_clock(json.loads((run_dir / "results.json").read_text()))
    raw = json.loads((killed / "results.json").read_text())
    assert (raw["config"]["federation"]["backend"], raw["config"]["federation"]["ray_address"]) == ("ray", f"127.0.0.1:{port}")
    again = without_wall_clock(raw)
    a, b = load_state_file(run_dir / GLOBAL_MODEL_FILE), load_state_file(killed / GLOBAL_MODEL_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run[1]["config"]["federation"]["ray_num_cpus"] == 2 and whole["rejected_updates"]  # two workers; crashes exercised
    # identical, except that each message of the resumed attempt also tells its client which earlier attempt's
    # saved states count (a few bytes more down, the same constant for every message after the checkpoint)
    comm, comm_again = whole.pop("communication"), again.pop("communication")
    assert again == whole and comm_again["bytes_up"] == comm["bytes_up"]
    extra: dict[bool, set[int]] = {False: set(), True: set()}  # per-message difference, by "after the checkpoint"
    for r, (row, row_again) in enumerate(zip(comm["per_round"], comm_again["per_round"], strict=True), start=1):
        down, down_again = row.pop("per_client_down"), row_again.pop("per_client_down")
        for key in ("bytes_down", "full_model_bytes"):
            row.pop(key), row_again.pop(key)
        assert row_again == row and down_again.keys() == down.keys()
        extra[r > killed_after] |= {down_again[c] - down[c] for c in down}
    assert extra[False] == {0} and len(extra[True]) == 1 and 0 < min(extra[True]) < 100, extra


def _checkpoint_round(path: Path) -> int:
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(f.metadata()["round"])
    except Exception:  # not written yet, or being replaced
        return 0


@contextlib.contextmanager
def one_cpu_ray_cluster(port: int, tmp_path: Path):
    """``ray start --head --block`` in its own process group, ended by signalling that group: unlike ``ray stop``,
    which stops every Ray process on the machine, it leaves other tests' clusters alone. It then forgets the
    cluster's address, as ``ray stop`` would."""
    log = open(tmp_path / "ray-start.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (tmp_path / "ray-start.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "ray-start.log").read_text()[-2000:]
            time.sleep(0.3)
        yield
    finally:
        for signum, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        # `ray start` recorded this cluster as the machine's default: a later bare ray.init() (Flower's simulation
        # runtime under `flwr run`) would try to join it, dead, and wait a minute per attempt
        from ray._private.utils import get_ray_address_file

        recorded = Path(get_ray_address_file(None))
        if recorded.exists() and recorded.read_text().strip().endswith(f":{port}"):
            recorded.unlink()
