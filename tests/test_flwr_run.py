"""`flwr run .` against a real local SuperLink (simulation runtime), as a user deploys the app (from a copy of the
repository without its .venv: the same FAB)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedcl.deploy.app_folder import stage_app
from fedcl.deploy.local import free_port, wait_for_port


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def superlink(tmp_path_factory):
    home = tmp_path_factory.mktemp("flwr-home")
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "fedcl-test"\n\n[superlink.fedcl-test]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "HF_HUB_OFFLINE": "1"}
    log = open(home / "superlink.log", "w")
    proc = subprocess.Popen([str(BIN / "flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port),
                             "--disable-runtime-dependency-installation", "--database", str(home / "state.db")],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=home)
    try:
        wait_for_port(port, proc, home / "superlink.log")
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the SuperLink and the SuperExec/ServerApp processes it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def flwr_run(env, app: Path, run_config: str, supernodes: int):
    return subprocess.run([str(BIN / "flwr"), "run", ".", "fedcl-test", "--run-config", run_config,
                           "--federation-config", f"num-supernodes={supernodes}", "--stream"],
                          cwd=app, env=env, capture_output=True, text=True, timeout=900)


def test_flwr_run_produces_results(superlink, tmp_path):
    out = tmp_path / "out"
    # `flwr run .` in a copy of the repository without its .venv, which Flower would walk file by file before leaving
    # it out (10 CPU-s): the FAB is the same (tests/test_deployment.py), as LocalFederation.run does
    app = stage_app(ROOT, tmp_path / "app")
    proc = flwr_run(superlink, app, f'out-dir="{out}"', 3)
    # flwr's exit code does not reflect ClientApp failures: judge by the results the ServerApp wrote
    assert (out / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["mode"] == "federated" and r["num_clients"] == 3 and r["rounds"] == 4
    assert r["rejected_updates"] == []
    assert r["final_avg_accuracy"] > 0.5
    assert r["communication"]["bytes_up"] > 0 and r["communication"]["bytes_down"] > 0
    assert all(row["clients_trained"] >= 1 for row in r["communication"]["per_round"])
