"""A real Flower federation on this machine: one SuperLink and N SuperNodes running fedcl's
ClientApp, with TLS and SuperNode authentication (for trials, tests and the deployment guide).

Every process is started in its own session and stopped (with its children: SuperExec,
ServerApp and ClientApp processes) when the context exits, also on errors.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedcl.deploy.app_folder import stage_app
from fedcl.deploy.certificates import Certificates, generate
from fedcl.errors import FedclError

BIN = Path(sys.executable).parent
CONNECTION = "fedcl-local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            raise FedclError(f"{log.stem} exited with code {proc.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)
    raise FedclError(f"{log.stem} did not open port {port} within {timeout_s:.0f} s")


@dataclass
class LocalFederation:
    """``with LocalFederation(workdir, nodes=2) as fed: fed.run(...)``; ``insecure=True`` only for trials."""

    workdir: Path
    nodes: int = 2
    insecure: bool = False
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    certs: Certificates | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.home = self.workdir / "flwr-home"
        self.port = free_port()
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}

    # ------------------------------------------------------------------ processes
    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen(cmd, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir)
        self.processes[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ federation
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        link = [str(BIN / "flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
                "--database", str(self.workdir / "superlink.db"), "--disable-runtime-dependency-installation"]
        connection = f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "127.0.0.1:{self.port}"\n'
        if self.insecure:
            link.append("--insecure")
            connection += "insecure = true\n"
        else:
            self.certs = generate(self.workdir / "certificates", ["127.0.0.1", "localhost"], self.nodes + 1, overwrite=True)
            link += ["--ssl-ca-certfile", str(self.certs.ca_cert), "--ssl-certfile", str(self.certs.server_cert),
                     "--ssl-keyfile", str(self.certs.server_key), "--enable-supernode-auth"]
            connection += f'root-certificates = "{self.certs.ca_cert}"\n'
        (self.home / "config.toml").write_text(connection)
        wait_for_port(self.port, self._start("superlink", link), self.workdir / "superlink.log")
        for i in range(self.nodes):
            if not self.insecure:
                self.register(i)
            self.start_supernode(i)

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def register(self, index: int) -> None:
        proc = self.flwr("supernode", "register", str(self.certs.node_keys[index][1]), CONNECTION)
        if proc.returncode != 0 or "registered successfully" not in proc.stdout:
            raise FedclError(f"registering SuperNode {index} failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")

    def start_supernode(self, index: int, partitions: int | None = None) -> subprocess.Popen:
        """SuperNode ``index`` with key ``node-<index>`` and data partition ``index`` of ``partitions``."""
        cmd = [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{self.port}", "--host", "127.0.0.1", "--port", str(free_port()),
               "--node-config", f"partition-id={index} num-partitions={partitions or self.nodes}"]
        if self.insecure:
            cmd.append("--insecure")
        else:
            cmd += ["--root-certificates", str(self.certs.ca_cert), "--auth-supernode-private-key", str(self.certs.node_keys[index][0])]
        return self._start(f"supernode-{index}", cmd)

    def online_nodes(self) -> int:
        proc = self.flwr("supernode", "list", CONNECTION, "--format", "json")
        return proc.stdout.count('"online"')

    def wait_online(self, count: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while self.online_nodes() < count:
            if time.monotonic() > deadline:
                raise FedclError(f"fewer than {count} SuperNodes online after {timeout_s:.0f} s")
            time.sleep(1)

    def run(self, app_dir: str | Path, run_config: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """``flwr run <app_dir> <connection> --run-config ... --stream``, from a slim copy of ``app_dir`` (the same FAB
        without Flower walking a virtual environment beside the app: :mod:`fedcl.deploy.app_folder`)."""
        staged = stage_app(app_dir, tempfile.mkdtemp(prefix="app-", dir=self.workdir))
        return subprocess.run([str(BIN / "flwr"), "run", str(staged), CONNECTION, "--run-config", run_config, "--stream"],
                              env=self.env, capture_output=True, text=True, timeout=timeout)
