"""Bad input everywhere, table-driven: configs, data files, weights files and checkpoints.

Each case runs the real command line in-process and must end with exit code 2 and exactly
one line on stderr, ``fedcl: error: ...`` naming the problem, and no traceback.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fedcl.cli import main
from fedcl.config import build_config
from fedcl.data.idx import write_idx
from fedcl.federation.checkpoint import CHECKPOINT_FILE, Checkpoint, save_checkpoint
from fedcl.federation.settings import FedRunConfig

from tests.test_data import _write_cifar, write_fake_fmnist

Case = tuple[str, Callable[[Path], list[str]], str]


def train(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["train", "-q", "-o", str(tmp / "out"), *[a for o in overrides for a in ("--set", o)]]


def simulate(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["simulate", "-q", "-p", "fedsmoke", "-o", str(tmp / "out"), *[a for o in overrides for a in ("--set", o)]]


def with_file(name: str, content: bytes | str, *overrides: str, key: str = "--config", command: str = "train") -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        extra = [a for o in overrides for a in ("--set", o.format(path=path, tmp=tmp))]
        args = [key, str(path)] if key else []
        return [command, "-q", "-o", str(tmp / "out"), *args, *extra]
    return build


def with_data(make: Callable[[Path], None], *overrides: str) -> Callable[[Path], list[str]]:
    """Data files made by ``make`` under tmp/data, read by a small single-device run."""
    def build(tmp: Path) -> list[str]:
        root = tmp / "data"
        root.mkdir()
        make(root)
        sets = [f"data.root={json.dumps(str(root))}", "data.download=false", *overrides]
        return ["train", "-q", "-o", str(tmp / "out"), *[a for o in sets for a in ("--set", o)]]
    return build


# ---------------------------------------------------------------------- data file makers
def fmnist_then(mutate: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        write_fake_fmnist(root, gz=False)
        mutate(root)
    return make


def _truncate(root: Path) -> None:
    f = root / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])


def _bad_magic(root: Path) -> None:
    (root / "train-labels-idx1-ubyte").write_bytes(b"\x01\x02\x03\x04garbage")


def _fewer_labels(root: Path) -> None:
    write_idx(root / "train-labels-idx1-ubyte", np.arange(30) % 10)


def _label_out_of_range(root: Path) -> None:
    write_idx(root / "train-labels-idx1-ubyte", np.full(40, 12))


def _not_gzip(root: Path) -> None:
    (root / "train-images-idx3-ubyte").unlink()
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip")


def _missing_test_labels(root: Path) -> None:
    (root / "t10k-labels-idx1-ubyte").unlink()


def _cifar_then(mutate: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        mutate(_write_cifar(root, "cifar10"))
    return make


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def _images(root: Path, mode: str = "RGB", broken: bool = False, test: bool = True) -> None:
    for split in ("train", "test") if test else ("train",):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new(mode, (12, 12)).save(root / split / cls / f"{i}.png")
    if broken:
        (root / "train" / "cat" / "broken.png").write_bytes(b"not a png")


# ---------------------------------------------------------------------- weights and checkpoints
def weights(kind: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / ("weights.safetensors" if kind.startswith("st") else "weights.pt")
        if kind == "st-shapes":
            save_file({"conv_stem.weight": torch.zeros(2, 2)}, str(path))
        elif kind == "st-corrupt":
            path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
        elif kind == "pt-garbage":
            path.write_bytes(b"definitely not a torch file")
        elif kind == "pt-code":
            path.write_bytes(pickle.dumps(Exploit()))
        elif kind == "pt-not-tensors":
            torch.save({"epoch": 3, "note": "no tensors"}, path)
        return train("data.dataset=digits", "data.image_size=16", "data.num_tasks=1", "model.pretrained=false",
                     f"model.checkpoint={json.dumps(str(path))}")(tmp)
    return build


SMOKE = ["federation.backend=inline"]


def checkpoint(kind: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        out = tmp / "out"
        out.mkdir()
        path = out / CHECKPOINT_FILE
        cfg = build_config("fedsmoke", None, SMOKE + ["federation.resume=true"], schema=FedRunConfig)
        if kind == "garbage":
            path.write_bytes(b"\x00" * 64)
        elif kind == "foreign":
            save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "something-else"})
        elif kind == "other-config":
            other = build_config("fedsmoke", None, SMOKE + ["federation.num_clients=4"], schema=FedRunConfig)
            save_checkpoint(path, Checkpoint(2, other.to_dict(), {"global/x": torch.zeros(1)}, {}))
        elif kind == "other-model":
            save_checkpoint(path, Checkpoint(2, cfg.to_dict(), {"global/transform.delta": torch.zeros(3)}, {}))
        elif kind == "bad-meta":
            save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "fedcl-checkpoint/1", "round": "two", "config": "{", "state": "{}"})
        return ["simulate", "-q", "-p", "fedsmoke", "-o", str(out), "--resume", *[a for o in SMOKE for a in ("--set", o)]]
    return build


CASES: list[Case] = [
    # ---- config keys and types
    ("unknown key", train("foo=1"), "unknown config key 'foo'"),
    ("typo with suggestion", train("train.epoch=2"), "did you mean 'train.epochs'"),
    ("nested typo", simulate("federation.num_client=3"), "did you mean 'federation.num_clients'"),
    ("string for int", train('train.epochs="two"'), "train.epochs: expected an integer"),
    ("bool for int", train("train.epochs=true"), "train.epochs: expected an integer"),
    ("string for float", train('train.lr="fast"'), "train.lr: expected a number"),
    ("int for bool", train("data.shuffle_classes=3"), "data.shuffle_classes: expected true or false"),
    ("scalar for list", train("data.class_order=3"), "data.class_order: expected a list"),
    ("bad list item", train('data.class_order=[1, "a"]'), "data.class_order[1]: expected an integer"),
    ("scalar for section", train("data=3"), "data: expected a table"),
    ("override without =", lambda tmp: ["train", "--set", "train.epochs"], "override 'train.epochs' is not key=value"),
    ("unknown preset", lambda tmp: ["train", "-p", "nope"], "unknown preset 'nope'"),
    # ---- ranges and choices
    ("tiny images", train("data.image_size=4"), "data.image_size must be at least 8"),
    ("zero tasks", train("data.num_tasks=0"), "data.num_tasks must be at least 1"),
    ("zero batch", train("train.batch_size=0"), "train.batch_size must be at least 1"),
    ("negative lr", train("train.lr=-0.1"), "train.lr must be positive"),
    ("unknown optimizer", train('train.optimizer="lbfgs"'), "train.optimizer must be one of adam, sgd"),
    ("unknown precision", train('train.precision="fp8"'), "train.precision must be one of"),
    ("unknown logit mask", train('train.logit_mask="some"'), "train.logit_mask must be one of"),
    ("unknown device", train('train.device="tpu"'), "train.device must be auto, cpu, cuda"),
    ("unknown scenario", train('data.scenario="open_world"'), "data.scenario must be one of"),
    ("memory fraction", train("train.gpu_memory_fraction=1.5"), "train.gpu_memory_fraction must be in (0, 1]"),
    # ---- names in the registries
    ("unknown backbone", train('model.backbone="resnet9000"'), "unknown backbone 'resnet9000'"),
    ("unknown dataset", train('data.dataset="imagenet22k"'), "unknown dataset 'imagenet22k'"),
    ("unknown transform", train('model.transform.name="warp"'), "unknown transform 'warp'"),
    ("unknown head", train('model.head.name="forest"'), "unknown head 'forest'"),
    ("unknown method", train('method.name="magic"'), "unknown method 'magic'"),
    ("unknown plugin", train("method.plugins={si={}}"), "unknown plugin 'si'"),
    ("unknown plugin option", train("method.plugins={ewc={lambda=3}}"), "plugin 'ewc': unknown option(s) lambda"),
    ("plugin options not a table", train("method.plugins={ewc=3}"), "method.plugins.ewc: expected a table of options"),
    ("replay without budget", train("method.plugins={replay={}}"), "plugin 'replay': set exactly one of buffer_size"),
    # ---- contradictory settings
    ("multi-head without task ids", train('model.head.name="multi_head"'), "needs task ids at test time"),
    ("per-task without transform", train('model.transform.name="none"', "model.transform.per_task=true"), "per_task=true needs a transform"),
    ("more tasks than classes", train("data.num_tasks=6"), "6 tasks x 2 classes need 12 classes"),
    ("repeated classes", train("data.num_tasks=2", "data.class_order=[1, 1, 2, 3]"), "data.class_order must list distinct classes"),
    ("domains per task", train('data.scenario="domain_incremental"', "data.num_tasks=3", 'data.domains=["none", "invert"]'), "data.domains lists 2 shifts for 3 tasks"),
    ("unknown domain shift", train('data.scenario="domain_incremental"', "data.num_tasks=2", 'data.domains=["none", "melt"]'), "unknown domain shift 'melt'"),
    # ---- federation settings
    ("no clients", simulate("federation.num_clients=0"), "federation.num_clients must be at least 1"),
    ("unknown partition", simulate('federation.partition="zipf"'), "federation.partition must be one of"),
    ("unknown strategy", simulate('federation.strategy="scaffold"'), "federation.strategy must be one of"),
    ("unknown quantization", simulate('federation.quantization="int4"'), "federation.quantization must be one of"),
    ("unknown aggregation", simulate('federation.aggregation="mean"'), "federation.aggregation must be one of"),
    ("zero fraction", simulate("federation.fraction_train=0"), "federation.fraction_train must be in (0, 1]"),
    ("waiting forever", simulate("federation.min_available_nodes=9"), "the server would wait forever"),
    ("trim half", simulate("federation.trim_fraction=0.5"), "federation.trim_fraction must be in [0, 0.5)"),
    ("certain faults", simulate("federation.fault_rate=1.0"), "federation.fault_rate must be in [0, 1)"),
    ("unknown fault kind", simulate('federation.fault_kind="hang"'), "federation.fault_kind must be one of crash, timeout"),
    ("malformed fault schedule", simulate('federation.fault_schedule=["x:1"]'), "'x:1' is not 'round:client'"),
    ("fault outside the run", simulate('federation.fault_schedule=["99:0"]'), "'99:0' is outside rounds 1..4"),
    ("unknown scheduled fault", simulate('federation.fault_schedule=["1:0:explode"]'), "has kind 'explode'"),
    ("noise without clipping", simulate("federation.dp_noise_multiplier=1.0"), "needs federation.dp_clipping_norm"),
    ("DP with median", simulate("federation.dp_clipping_norm=1.0", 'federation.aggregation="median"'), "not 'median'"),
    ("DP with NCM", simulate("federation.dp_clipping_norm=1.0", 'model.head.name="ncm"'), "cannot protect the NCM head"),
    ("quorum above clients", simulate("federation.min_train_replies=5"), "min_train_replies=5 exceeds federation.num_clients=3"),
    ("resume without checkpoints", simulate("federation.resume=true", "federation.checkpoint_every=0"), "needs checkpoints"),
    ("zero timeout", simulate("federation.round_timeout_s=0"), "federation.round_timeout_s must be positive"),
    ("unknown device profile", simulate('federation.device_profiles=["toaster"]'), "unknown profile 'toaster'"),
    ("no device profile", simulate("federation.device_profiles=[]"), "must list at least one profile"),
    ("too many clients for the data", simulate("federation.num_clients=200", "data.max_train_per_class=10", "federation.backend=inline"),
     "federation.num_clients=200 exceeds the"),
    # ---- config files
    ("config file missing", lambda tmp: ["train", "-c", str(tmp / "nope.toml")], "config file not found"),
    ("config file unparsable", with_file("bad.toml", "[data\nimage_size = 3"), "cannot parse config file"),
    ("config file not a table", with_file("list.json", "[1, 2, 3]"), "must hold a table"),
    ("config file not text", with_file("binary.toml", b"\xff\xfe\x00\x01"), "cannot parse config file"),
    # ---- data files
    ("dataset folder empty", with_data(lambda root: None), "Fashion-MNIST not found in"),
    ("truncated IDX", with_data(fmnist_then(_truncate)), "header promises"),
    ("IDX bad magic", with_data(fmnist_then(_bad_magic)), "bad magic number"),
    ("images and labels differ", with_data(fmnist_then(_fewer_labels)), "do not match"),
    ("label out of range", with_data(fmnist_then(_label_out_of_range)), "label 12 out of range"),
    ("gz that is not gzip", with_data(fmnist_then(_not_gzip)), "cannot read"),
    ("test labels missing", with_data(fmnist_then(_missing_test_labels)), "missing t10k-images-idx3-ubyte or t10k-labels-idx1-ubyte"),
    ("CIFAR folder missing", with_data(lambda root: None, 'data.dataset="cifar10"'), "cifar10 not found"),
    ("CIFAR pickle with code", with_data(_cifar_then(lambda f: (f / "test_batch").write_bytes(pickle.dumps({"data": Exploit(), "labels": []}))),
                                         'data.dataset="cifar10"'), "refusing to load 'builtins.print'"),
    ("CIFAR batch of wrong shape", with_data(_cifar_then(lambda f: (f / "data_batch_1").write_bytes(pickle.dumps({"data": np.zeros((3, 10), np.uint8), "labels": [0, 1, 2]}))),
                                             'data.dataset="cifar10"'), "is not N x 3072"),
    ("CIFAR batch without labels", with_data(_cifar_then(lambda f: (f / "data_batch_2").write_bytes(pickle.dumps({"data": np.zeros((3, 3072), np.uint8)}))),
                                             'data.dataset="cifar10"'), "needs 'data' and 'labels'"),
    ("image folder without root", train('data.dataset="imagefolder"'), "needs data.root"),
    ("image folder without test", with_data(lambda root: _images(root, test=False), 'data.dataset="imagefolder"'), "test not found"),
    ("corrupt image", with_data(lambda root: _images(root, broken=True), 'data.dataset="imagefolder"'), "cannot decode image"),
    ("16-bit images", with_data(lambda root: _images(root, mode="I;16"), 'data.dataset="imagefolder"'), "has mode 'I;16'"),
    # ---- weights files
    ("weights file missing", train("model.checkpoint=\"/nonexistent/w.pt\"", "data.dataset=digits"), "checkpoint file not found"),
    ("weights of other shapes", weights("st-shapes"), "does not fit backbone 'efficientnet_lite0'"),
    ("weights safetensors corrupt", weights("st-corrupt"), "cannot read checkpoint"),
    ("weights not torch", weights("pt-garbage"), "cannot read checkpoint"),
    ("weights with code", weights("pt-code"), "cannot read checkpoint"),
    ("weights without tensors", weights("pt-not-tensors"), "does not hold a state dict of tensors"),
    # ---- server checkpoints
    ("resume without checkpoint", lambda tmp: ["simulate", "-q", "-p", "fedsmoke", "-o", str(tmp / "out"), "--resume", "--set", "federation.backend=inline"],
     "nothing to resume: no checkpoint at"),
    ("checkpoint garbage", checkpoint("garbage"), "is corrupt or not a safetensors file"),
    ("checkpoint of another tool", checkpoint("foreign"), "is not a fedcl checkpoint"),
    ("checkpoint of another config", checkpoint("other-config"), "federation.num_clients: 4 in the checkpoint, 3 now"),
    ("checkpoint of another model", checkpoint("other-model"), "does not match the model"),
    ("checkpoint metadata damaged", checkpoint("bad-meta"), "has damaged metadata"),
]


def test_there_are_at_least_fifty_distinct_cases():
    assert len(CASES) >= 50
    assert len({name for name, *_ in CASES}) == len(CASES)
    assert len({message for *_, message in CASES}) >= 50


@pytest.mark.parametrize("name, build, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(name, build, message, tmp_path, capsys):
    code = main(build(tmp_path))
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("fedcl: error:")]
    assert len(lines) == 1, err
    assert message in lines[0], lines[0]
    assert not (tmp_path / "out" / "results.json").exists()  # never a silent wrong run
