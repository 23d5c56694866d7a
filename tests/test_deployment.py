"""A real deployment on loopback: SuperLink + two SuperNodes with TLS and SuperNode authentication,
fedcl's ClientApp on each node, `flwr run` from the app directory."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedcl.deploy.local import LocalFederation

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    with LocalFederation(tmp_path_factory.mktemp("deploy"), nodes=2) as fed:
        fed.wait_online(2)
        yield fed
    # leaving the block stopped every process, also when a test failed
    assert all(p.poll() is not None for p in fed.processes.values())


def test_unregistered_supernode_is_refused(federation):
    intruder = federation.start_supernode(2)  # has a key pair, but its public key was never registered
    try:
        intruder.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("an unregistered SuperNode stayed connected")
    assert intruder.returncode != 0
    assert federation.online_nodes() == 2


def test_two_rounds_over_tls_return_results(federation, tmp_path):
    out = tmp_path / "out"
    # no client evaluation: each message costs a ClientApp process (torch, timm, the backbone: 8 CPU-s); a new process
    # loading the node's saved state is what round 2's training messages check
    overrides = "federation.num_clients=2;data.num_tasks=2;federation.rounds_per_task=1;federation.boundary_jitter=0;federation.evaluate_clients=false"
    proc = federation.run(ROOT, f'out-dir="{out}" overrides="{overrides}"')
    assert (out / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["rounds"] == 2 and r["num_clients"] == 2 and r["rejected_updates"] == []
    assert r["final_avg_accuracy"] > 0.35  # 4 classes: chance is 0.25
    c = r["communication"]
    assert c["bytes_up"] > 0 and c["bytes_down"] > 0
    for row in c["per_round"]:
        assert len(row["per_client_up"]) == 2
        for up in row["per_client_up"].values():  # each reply carries the lightweight state plus a few kB of metrics
            assert r["trainable_bytes"] <= up <= r["trainable_bytes"] + 8_000
    assert (out / "global_model.safetensors").exists()
    # the headline figures reach whoever started the run, through the streamed ServerApp log
    assert f'"final_avg_accuracy": {round(r["final_avg_accuracy"], 4)}' in proc.stdout + proc.stderr


def test_too_few_supernodes_fail_fast_with_a_clear_error(federation, tmp_path):
    out = tmp_path / "out"
    start = time.monotonic()
    proc = federation.run(ROOT, f'out-dir="{out}" overrides="federation.num_clients=3;federation.node_wait_s=3"')
    assert not (out / "results.json").exists()
    assert "only 2 of the 3 required SuperNodes connected" in proc.stdout + proc.stderr
    assert time.monotonic() - start < 200


def test_certs_command_writes_a_ca_server_certificate_and_node_keys(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fedcl.cli", "certs", "--out", str(tmp_path / "c"), "--hosts", "edge.local,10.0.0.5", "--nodes", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["ca.crt", "ca.key", "node-0.key", "node-0.pub", "node-1.key", "node-1.pub", "server.key", "server.pem"]
    assert (tmp_path / "c" / "node-0.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert oct((tmp_path / "c" / "ca.key").stat().st_mode)[-3:] == "600"
    again = subprocess.run([sys.executable, "-m", "fedcl.cli", "certs", "--out", str(tmp_path / "c"), "--hosts", "x"], capture_output=True, text=True)
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr


def _fab(app: Path, where: Path) -> bytes:
    where.mkdir()
    proc = subprocess.run([str(Path(sys.executable).parent / "flwr"), "build", "--app", str(app)], cwd=where, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (fab,) = where.glob("*.fab")
    return fab.read_bytes()


def _app(root: Path) -> Path:
    app = root / "app"
    for rel in ["pyproject.toml", "README.md", ".gitignore", "LICENSE", "pkg/__init__.py", "pkg/task.py", "pkg/conf/a.yaml", "pkg/b.json",
                "ignored/x.py", ".venv/lib/site.py", ".venv/pyvenv.cfg", ".git/config.json", "pkg/__pycache__/task.cpython-311.pyc",
                "pkg/.venv/keep.py", "pkg/.flwr/c.toml", "pkg/data.npz", "pkg/weights.bin"]:
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_text("ignored/\n" if rel == ".gitignore" else f"# {rel}\n")
    (app / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (app / "pkg" / "link.py").symlink_to(app / "pkg" / "task.py")
    return app


def test_a_staged_app_folder_gives_flower_the_same_fab(tmp_path):
    """`flwr run` from the slim copy LocalFederation makes: the FAB is byte for byte the one of the folder itself,
    without the root's virtual environment, caches, links and data files the copy leaves out."""
    from fedcl.deploy.app_folder import stage_app

    app = _app(tmp_path)
    staged = stage_app(app, app / "pkg" / "staged")  # a destination inside the app folder is not copied into itself
    kept = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert kept == [".git/config.json", ".gitignore", "LICENSE", "README.md", "ignored/x.py", "pkg/.flwr/c.toml", "pkg/.venv/keep.py",
                    "pkg/__init__.py", "pkg/b.json", "pkg/conf/a.yaml", "pkg/task.py", "pyproject.toml"]
    staged.rename(tmp_path / "staged")
    assert _fab(tmp_path / "staged", tmp_path / "b1") == _fab(app, tmp_path / "b2")


def test_staging_an_app_never_deletes_or_overwrites_anything(tmp_path):
    from fedcl.deploy.app_folder import stage_app
    from fedcl.errors import FedclError

    app = _app(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (tmp_path / "link").symlink_to(elsewhere)
    (tmp_path / "file").write_text("mine")
    before = sorted(p for p in tmp_path.rglob("*"))
    for dest, why in [(app, "not empty"), (tmp_path, "not empty"), (tmp_path / "link", "a link"), (tmp_path / "file", "a file"),
                      (elsewhere, "not empty")]:
        with pytest.raises(FedclError, match=why):
            stage_app(app, dest)
    with pytest.raises(FedclError, match="no app folder"):
        stage_app(tmp_path / "missing", tmp_path / "new")
    assert sorted(p for p in tmp_path.rglob("*")) == before and (elsewhere / "keep.txt").read_text() == "mine"
