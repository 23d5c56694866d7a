"""Bad-input cases of the reliability work (issue 15): output paths, non-finite numbers, weights and
checkpoints, data folders, Ray settings, ``fedcl certs`` and command-line mistakes.

Same shape as ``tests/test_bad_inputs.py``'s CASES: (id, build(tmp) -> argv, expected substring of the one line).
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from fedcl.config import build_config
from fedcl.data.idx import write_idx
from fedcl.federation.checkpoint import CHECKPOINT_FILE, Checkpoint, save_checkpoint
from fedcl.federation.settings import FedRunConfig
from helpers import set_args

Case = tuple[str, Callable[[Path], list[str]], str]
INLINE = ["federation.backend=inline", "data.num_tasks=2", "data.max_train_per_class=24", "data.max_test_per_class=20",
          "federation.rounds_per_task=2", "federation.boundary_jitter=0", 'federation.device_profiles=["server"]',
          "federation.partition=iid", "federation.evaluate_clients=false"]
SMALL_TRAIN = ["data.dataset=digits", "data.image_size=16", "data.num_tasks=2", "data.max_train_per_class=10",
               "data.max_test_per_class=5", "model.pretrained=false"]


def train(*overrides: str, out: str = "out") -> Callable[[Path], list[str]]:
    return lambda tmp: ["train", "-q", "-o", str(tmp / out), *set_args([*SMALL_TRAIN, *overrides])]


def simulate(*overrides: str, out: str = "out") -> Callable[[Path], list[str]]:
    return lambda tmp: ["simulate", "-q", "-p", "fedsmoke", "-o", str(tmp / out), *set_args([*INLINE, *overrides])]


def certs(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["certs", "--out", str(tmp / "certs"), *args]


# ---------------------------------------------------------------------- output folders
def out_is_file(command: Callable[..., Callable[[Path], list[str]]], under: bool = False) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / "taken").write_text("a file the user keeps")
        return command(out="taken/run" if under else "taken")(tmp)
    return build


def read_only_out(tmp: Path) -> list[str]:
    """A folder nobody may write to (root may write anywhere except where the kernel forbids it)."""
    if os.geteuid() == 0:
        return train(out="../" * 40 + "proc/fedcl-out")(tmp)
    folder = tmp / "locked"
    folder.mkdir(mode=0o500)
    return train(out="locked/run")(tmp)


# ---------------------------------------------------------------------- weights files
def weights(kind: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / ("weights.safetensors" if kind == "nan" else "weights.pt")
        if kind == "nan":
            import timm

            state = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).state_dict()
            state = {k: v.contiguous() for k, v in state.items()}
            state["conv_stem.weight"][0, 0, 0, 0] = float("nan")
            save_file(state, str(path))
        elif kind == "pickle":
            path.write_bytes(pickle.dumps({"conv_stem.weight": np.zeros(3)}))  # numpy objects: not plain tensors
        elif kind == "torch-objects":
            torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a whole module, not a state dict
        elif kind == "int-keys":
            torch.save({1: torch.zeros(1)}, path)
        return train(f"model.weights={json.dumps(str(path))}")(tmp)
    return build


# ---------------------------------------------------------------------- server checkpoints
def checkpoint(kind: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        out = tmp / "out"
        out.mkdir()
        path = out / CHECKPOINT_FILE
        cfg = build_config("fedsmoke", None, [*INLINE, "federation.resume=true"], schema=FedRunConfig)
        meta = {"format": "fedcl-checkpoint/1", "round": "2", "config": json.dumps(cfg.to_dict()), "state": "{}"}
        if kind == "nan":
            save_checkpoint(path, Checkpoint(2, cfg.to_dict(), {"global/transform.delta": torch.full((3,), float("nan"))}, {}))
        elif kind == "inf-moment":
            save_checkpoint(path, Checkpoint(2, cfg.to_dict(), {"adam_v/head.weight": torch.tensor([float("inf")])}, {}))
        elif kind == "far-round":
            save_checkpoint(path, Checkpoint(10**12, cfg.to_dict(), {"global/x": torch.zeros(1)}, {}))
        elif kind == "round-zero":
            save_checkpoint(path, Checkpoint(0, cfg.to_dict(), {"global/x": torch.zeros(1)}, {}))
        elif kind == "long-round":
            save_file({"x": torch.zeros(1)}, str(path), metadata={**meta, "round": "9" * 5000})
        elif kind == "state-list":
            save_file({"x": torch.zeros(1)}, str(path), metadata={**meta, "state": "[1, 2]"})
        elif kind == "deep-config":
            save_file({"x": torch.zeros(1)}, str(path), metadata={**meta, "config": "[" * 100_000 + "]" * 100_000})
        elif kind == "no-config":
            save_file({"x": torch.zeros(1)}, str(path), metadata={k: v for k, v in meta.items() if k != "config"})
        elif kind == "server-state":
            from fedcl.federation.server_app import server_model

            *_, state = server_model(cfg)
            tensors = {f"global/{k}": v for k, v in state.items()}
            save_checkpoint(path, Checkpoint(2, cfg.to_dict(), tensors, {"strategy": {"ledger": 3}, "run_token": "x", "server_accuracy": {}}))
        return ["simulate", "-q", "-p", "fedsmoke", "-o", str(out), "--resume", *set_args(INLINE)]
    return build


# ---------------------------------------------------------------------- data folders
def fmnist(mutate: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        root = tmp / "data"
        root.mkdir()
        rng = np.random.default_rng(0)
        for prefix, n in (("train", 40), ("t10k", 20)):
            write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
            write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
        mutate(root)
        return ["train", "-q", "-o", str(tmp / "out"), *set_args(["data.dataset=fashion_mnist", f"data.root={json.dumps(str(root))}",
                                                              "data.download=false", "data.image_size=16", "model.pretrained=false"])]
    return build


def _gzip_then(cut: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        plain = root / "train-images-idx3-ubyte"
        packed = bytearray(gzip.compress(plain.read_bytes()))
        plain.unlink()
        (root / "train-images-idx3-ubyte.gz").write_bytes(cut(bytes(packed)))
    return mutate


def _flip_body(data: bytes) -> bytes:
    body = bytearray(data)
    for i in range(20, min(len(body) - 8, 400)):
        body[i] ^= 0xFF
    return bytes(body)


def image_folder(mutate: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        root = tmp / "images"
        for split in ("train", "test"):
            for cls in ("cat", "dog"):
                (root / split / cls).mkdir(parents=True)
                for i in range(2):
                    Image.new("RGB", (12, 12)).save(root / split / cls / f"{i}.png")
        mutate(root)
        return train("data.dataset=imagefolder", f"data.root={json.dumps(str(root))}", "data.num_tasks=1")(tmp)
    return build


def _loop(root: Path) -> None:
    (root / "train" / "cat" / "again").symlink_to(root / "train" / "cat", target_is_directory=True)


def _empty_class(root: Path) -> None:
    (root / "train" / "bird").mkdir()


RELIABILITY_CASES: list[Case] = [
    # ---- output folders (checked before any work)
    ("out is a file (train)", out_is_file(train), "is a file, not a folder"),
    ("out under a file (train)", out_is_file(train, under=True), "which is a file, not a folder"),
    ("out is a file (simulate)", out_is_file(simulate), "is a file, not a folder"),
    ("out not writable", read_only_out, "is not a writable folder"),
    ("certs out under a file", lambda tmp: (tmp / "f").write_text("x") and ["certs", "--hosts", "a.example", "--out", str(tmp / "f" / "c")],
     "which is a file, not a folder"),
    # ---- non-finite numbers are never reported as results
    ("server lr overflowing", simulate("federation.strategy=fedadam", "federation.server_lr=1e300"), "became non-finite in round 1"),
    ("DP noise beyond its range", simulate("federation.dp_clipping_norm=1.0", "federation.dp_noise_multiplier=1e300"), "federation.dp_noise_multiplier must be a finite number in [0, 1000000.0]: got 1e+300"),
    ("weights full of NaN", weights("nan"), "holds NaN values in 'conv_stem.weight'"),
    ("checkpoint with NaN", checkpoint("nan"), "holds NaN values in 'global/transform.delta'"),
    ("checkpoint with inf moments", checkpoint("inf-moment"), "holds infinite values in 'adam_v/head.weight'"),
    # ---- weights files that are not plain tensors
    ("weights as a pickle", weights("pickle"), "neither a safetensors file nor a torch file of plain tensors"),
    ("weights with a module", weights("torch-objects"), "holds Python objects other than tensors"),
    ("weights with integer keys", weights("int-keys"), "does not hold a state dict of tensors"),
    # ---- server checkpoints with absurd or damaged metadata
    ("resume after round 10**12", checkpoint("far-round"), "claims round 1000000000000, outside this run's rounds 1..4"),
    ("resume after round 0", checkpoint("round-zero"), "claims round 0"),
    ("checkpoint round of 5000 digits", checkpoint("long-round"), "has damaged metadata"),
    ("checkpoint state not an object", checkpoint("state-list"), "config and state must be JSON objects"),
    ("checkpoint config nested deeply", checkpoint("deep-config"), "has damaged metadata (RecursionError"),
    ("checkpoint without config", checkpoint("no-config"), "has damaged metadata (KeyError"),
    ("checkpoint server state damaged", checkpoint("server-state"), "has damaged server state"),
    # ---- data files and folders
    ("gzip with a corrupt body", fmnist(_gzip_then(_flip_body)), "train-images-idx3-ubyte.gz"),
    ("gzip cut short", fmnist(_gzip_then(lambda data: data[: len(data) // 2])), "cannot read"),
    ("image folder symlink loop", image_folder(_loop), "symlink loop at"),
    ("image class without images", image_folder(_empty_class), "holds no images"),
    # ---- Ray clusters that are not there or too small (each check has a deadline)
    ("Ray address with nothing listening", simulate("federation.backend=ray", 'federation.ray_address="127.0.0.1:9"'), "cannot reach a Ray cluster at 127.0.0.1:9"),
    ("Ray address not host:port", simulate("federation.backend=ray", 'federation.ray_address="nowhere"'), "is not host:port"),
    ("client needs more GPUs than there are", simulate("federation.backend=ray", "federation.client_num_gpus=64"), "client_num_gpus"),
    # ---- fedcl certs
    ("certificate for 0 days", certs("--hosts", "a.example", "--days", "0"), "--days must be between 1 and 3650"),
    ("certificate for negative days", certs("--hosts", "a.example", "--days=-3"), "--days must be between 1 and 3650"),
    ("certificate for 10**20 days", certs("--hosts", "a.example", "--days", str(10**20)), "--days must be between 1 and 3650"),
    ("certificate days not a number", certs("--hosts", "a.example", "--days", "ten"), "argument --days: invalid int value"),
    ("host with odd characters", certs("--hosts", "super link!"), "'super link!' is neither an IP address nor a valid DNS host name"),
    ("host with an empty label", certs("--hosts", "a..example"), "'a..example' is neither"),
    ("host label too long", certs("--hosts", "a" * 64 + ".example"), "is neither an IP address"),
    ("IP address out of range", certs("--hosts", "10.0.0.300"), "'10.0.0.300' is neither"),
    ("no hosts", certs("--hosts", " , "), "--hosts must name at least one host"),
    ("absurd node count", certs("--hosts", "a.example", "--nodes", str(10**9)), "--nodes must be between 0 and 10000"),
    # ---- the command line itself
    ("unknown option", lambda tmp: ["train", "--epochs", "3"], "unrecognized arguments: --epochs 3"),
    ("unknown command", lambda tmp: ["fly"], "invalid choice: 'fly'"),
]

#: inputs whose message another check may word first (the config's range checks): one line and exit 2 is what counts

# values the schema refuses before anything runs (the guards above would also catch the non-finite ones)
RELIABILITY_CASES += [
    ("seed beyond 64 bits", train(f"seed={10**30}"), "seed must be an integer in [0, 4294967295]"),
    ("threads beyond 64 bits", train(f"train.num_threads={10**20}"), "train.num_threads must be an integer in [1, 1024]"),
    ("client needs more CPUs than there are", simulate("federation.backend=ray", "federation.client_num_cpus=100000"),
     "federation.client_num_cpus must be a finite number in (0, 4096]"),
]
