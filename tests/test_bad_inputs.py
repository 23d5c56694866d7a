"""Bad input everywhere, table-driven: configs, data files, weights files and checkpoints.

Each case runs the real command line in-process and must end with exit code 2 and stderr of
exactly one line, ``fedcl: error: ...`` naming the problem (so no traceback, no log noise).
This is the one table of bad configs and command lines; add a case here for every new check.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
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
from helpers import set_args

from tests.cases_reliability import RELIABILITY_CASES
from tests.test_data import _write_cifar, write_fake_fmnist

Case = tuple[str, Callable[[Path], list[str]], str]


def train(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["train", "-q", "-o", str(tmp / "out"), *set_args(overrides)]


def simulate(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["simulate", "-q", "-p", "fedsmoke", "-o", str(tmp / "out"), *set_args(overrides)]


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
        return ["train", "-q", "-o", str(tmp / "out"), *set_args(sets)]
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
    def __reduce__(self):  # eval, not print: a process that imported Ray has print replaced by Ray's own
        return (eval, ("'pwned'",))


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
                     f"model.weights={json.dumps(str(path))}")(tmp)
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
        return ["simulate", "-q", "-p", "fedsmoke", "-o", str(out), "--resume", *set_args(SMOKE)]
    return build


def built(*overrides: str) -> Callable[[Path], list[str]]:
    """A quick single-device run (digits, 16 px, random weights): for names checked where components are built."""
    return train("data.dataset=digits", "data.image_size=16", "data.num_tasks=2", "model.pretrained=false",
                 "data.max_train_per_class=4", "data.max_test_per_class=2", *overrides)


def nested_json(levels: int) -> str:
    return '{"data": {"domains": ' + "[" * levels + "]" * levels + "}}"


MANY_CPUS = (os.cpu_count() or 1) + 1  # more than this machine has, less than the schema's bound

CASES: list[Case] = [
    # ---- config keys and types
    ("unknown key", train("foo=1"), "unknown config key 'foo'"),
    ("typo with suggestion", train("train.epoch=2"), "did you mean 'train.epochs'"),
    ("nested typo", simulate("federation.num_client=3"), "did you mean 'federation.num_clients'"),
    ("renamed key", train('model.checkpoint="w.pt"'), "config key 'model.checkpoint' is now 'model.weights'"),
    ("string for int", train('train.epochs="two"'), "train.epochs: expected an integer, got 'two'"),
    ("bare word for int", train("train.epochs=two"), "train.epochs: expected an integer"),
    ("bool for int", train("train.epochs=true"), "train.epochs: expected an integer"),
    ("float for int", train("train.epochs=1.5"), "train.epochs: expected an integer"),
    ("string for float", train('train.lr="fast"'), "train.lr: expected a number"),
    ("int for bool", train("data.shuffle_classes=3"), "data.shuffle_classes: expected true or false"),
    ("scalar for list", train("data.class_order=3"), "data.class_order: expected a list"),
    ("bad list item", train('data.class_order=[1, "a"]'), "data.class_order[1]: expected an integer"),
    ("scalar for section", train("data=3"), "data: expected a table"),
    ("scalar for options", train("model.head.options=3"), "model.head.options: expected a table"),
    ("plugin options not a table", train("method.plugins={ewc=3}"), "method.plugins.ewc: expected a table"),
    ("override without =", lambda tmp: ["train", "--set", "train.epochs"], "override 'train.epochs' is not key=value"),
    ("override key too deep", train("a" + ".a" * 40 + "=1"), "nests more than 32 levels deep"),
    ("override value too deep", train("data.domains=" + "[" * 5000 + "]" * 5000), "override data.domains: the value nests more than 32 levels"),
    ("override of 5000 digits", train("seed=" + "9" * 5000), "override seed: cannot read the value"),
    ("overrides in conflict", train("train.lr=1", "train.lr.x=2"), "override 'train.lr.x' conflicts with another override"),
    ("unknown preset", lambda tmp: ["train", "-p", "nope"], "unknown preset 'nope'"),
    # ---- ranges and choices: every number finite, every integer within what it is used for
    ("tiny images", train("data.image_size=4"), "data.image_size must be an integer in [8, 1024]: got 4"),
    ("huge images", train("data.image_size=100000"), "data.image_size must be an integer in [8, 1024]"),
    ("zero tasks", train("data.num_tasks=0"), "data.num_tasks must be an integer in [1, 1000]"),
    ("zero epochs", train("train.epochs=0"), "train.epochs must be an integer in [1, 10000]: got 0"),
    ("zero batch", train("train.batch_size=0"), "train.batch_size must be an integer in"),
    ("negative seed", train("seed=-1"), "seed must be an integer in [0, 4294967295]: got -1"),
    ("seed beyond 32 bits", train("seed=1099511627776"), "seed must be an integer in [0, 4294967295]: got 1099511627776"),
    ("huge thread count", train("train.num_threads=1000000000000"), "train.num_threads must be an integer in [1, 1024]"),
    ("negative lr", train("train.lr=-0.1"), "train.lr must be a finite number > 0: got -0.1"),
    ("infinite lr", train("train.lr=inf"), "train.lr must be a finite number > 0: got inf"),
    ("infinite head lr", train("train.head_lr=inf"), "train.head_lr must be a finite number > 0: got inf"),
    ("NaN weight decay", train("train.weight_decay=nan"), "train.weight_decay must be a finite number >= 0: got nan"),
    ("infinite weight decay", train("train.weight_decay=inf"), "train.weight_decay must be a finite number >= 0: got inf"),
    ("momentum above one", train("train.momentum=2"), "train.momentum must be a finite number in [0, 1]: got 2"),
    ("unknown optimizer", train('train.optimizer="lbfgs"'), "train.optimizer must be one of adam, sgd: got 'lbfgs'"),
    ("unknown precision", train('train.precision="fp8"'), "train.precision must be one of auto, fp32, bf16, fp16"),
    ("unknown logit mask", train('train.logit_mask="some"'), "train.logit_mask must be one of current, seen, none"),
    ("unknown device", train('train.device="tpu"'), "train.device must be auto, cpu, cuda, cuda:N or mps: got 'tpu'"),
    ("unknown scenario", train('data.scenario="open_world"'), "data.scenario must be one of class_incremental"),
    ("memory fraction", train("train.gpu_memory_fraction=1.5"), "train.gpu_memory_fraction must be a finite number in (0, 1]"),
    ("NaN memory fraction", train("train.gpu_memory_fraction=nan"), "train.gpu_memory_fraction must be a finite number in (0, 1]"),
    # ---- resources and devices this machine lacks
    ("a GPU that is not there", train("train.device=cuda:99"), "train.device=cuda:99"),
    ("half precision on a CPU", train("train.device=cpu", "train.precision=fp16"),
     "train.precision=fp16 on a CPU would be much slower than fp32: use train.precision=fp32 or auto"),
    ("bfloat16 on a CPU", train("train.device=cpu", "train.precision=bf16"), "train.precision=bf16 on a CPU would be much slower"),
    ("more CPUs per client than the machine has", simulate(f"federation.client_num_cpus={MANY_CPUS}"),
     f"federation.client_num_cpus={MANY_CPUS} exceeds the {MANY_CPUS - 1} CPUs of this machine"),
    ("absurd CPUs per client", simulate("federation.client_num_cpus=1e9"), "federation.client_num_cpus must be a finite number in (0, 4096]"),
    ("more GPUs per client than the machine has", simulate("federation.client_num_gpus=99"),
     "federation.client_num_gpus=99 asks for more GPUs than this machine has"),
    ("CPUs per client beyond the Ray cluster", simulate("federation.ray_num_cpus=1", "federation.client_num_cpus=2"),
     "federation.client_num_cpus=2.0 exceeds federation.ray_num_cpus=1"),
    # ---- names checked where components are built
    ("unknown backbone", built('model.backbone="resnet9000"'), "model.backbone: unknown backbone 'resnet9000'"),
    ("unknown dataset", train('data.dataset="imagenet22k"'), "data.dataset: unknown dataset 'imagenet22k'"),
    ("unknown transform", built('model.transform.name="warp"'), "model.transform.name: unknown transform 'warp'"),
    ("unknown head", built('model.head.name="forest"'), "model.head.name: unknown head 'forest'"),
    ("unknown method", built('method.name="magic"'), "method.name: unknown method 'magic'"),
    ("unknown plugin", built("method.plugins={si={}}"), "method.plugins: unknown plugin 'si'"),
    ("plugin typo", built("method.plugins.ewk={}"), "unknown plugin 'ewk' (did you mean 'ewc'?)"),
    ("unknown plugin option", built("method.plugins.ewc.strenght=1"),
     "plugin 'ewc': unknown option(s) strenght; it accepts: strength, decay, fisher_samples"),
    ("replay without budget", built("method.plugins={replay={}}"), "plugin 'replay': set exactly one of buffer_size"),
    ("LwF at temperature zero", built("method.plugins.lwf.temperature=0"), "temperature > 0"),
    # ---- contradictory settings
    ("multi-head without task ids", train('model.head.name="multi_head"'), "needs task ids at test time"),
    ("per-task without transform", train('model.transform.name="none"', "model.transform.per_task=true"), "per_task=true needs a transform"),
    ("more tasks than classes", train("data.num_tasks=6"), "6 tasks x 2 classes need 12 classes"),
    ("repeated classes", train("data.num_tasks=2", "data.class_order=[1, 1, 2, 3]"), "data.class_order must list distinct classes"),
    ("class order too short", train("data.num_tasks=2", "data.class_order=[1, 2, 3]"),
     "data.class_order lists 3 classes; data.num_tasks x data.classes_per_task need 4"),
    ("class beyond the dataset", train("data.num_tasks=2", "data.class_order=[0, 1, 2, 30]"), "data.class_order must list distinct classes in 0..9"),
    ("negative class", train("data.num_tasks=2", "data.class_order=[0, 1, 2, -3]"), "data.class_order[3] must be an integer in [0, 99999]"),
    ("domains per task", train('data.scenario="domain_incremental"', "data.num_tasks=3", 'data.domains=["none", "invert"]'),
     "data.domains lists 2 shifts for 3 tasks"),
    ("unknown domain shift", train('data.scenario="domain_incremental"', "data.num_tasks=2", 'data.domains=["none", "melt"]'), "unknown domain shift 'melt'"),
    # ---- federation settings
    ("no clients", simulate("federation.num_clients=0"), "federation.num_clients must be an integer in [1, 100000]: got 0"),
    ("a million clients", simulate("federation.num_clients=1000000"), "federation.num_clients must be an integer in [1, 100000]"),
    ("endless rounds", simulate("federation.rounds_per_task=1000000000000"), "federation.rounds_per_task must be an integer in [1, 10000]"),
    ("unknown partition", simulate('federation.partition="zipf"'), "federation.partition must be one of iid, dirichlet, shard: got 'zipf'"),
    ("unknown strategy", simulate('federation.strategy="scaffold"'), "federation.strategy must be one of fedavg, fedprox, fedadam"),
    ("unknown quantization", simulate('federation.quantization="int4"'), "federation.quantization must be one of none, fp16, int8"),
    ("infinite Dirichlet alpha", simulate("federation.dirichlet_alpha=inf"), "federation.dirichlet_alpha must be a finite number > 0: got inf"),
    ("infinite server lr", simulate('federation.strategy="fedadam"', "federation.server_lr=inf"), "federation.server_lr must be a finite number > 0"),
    ("infinite DP noise", simulate("federation.dp_clipping_norm=1.0", "federation.dp_noise_multiplier=inf"),
     "federation.dp_noise_multiplier must be a finite number in [0, 1000000.0]: got inf"),
    ("NaN update norm", simulate("federation.max_update_norm=nan"), "federation.max_update_norm must be a finite number > 0: got nan"),
    ("infinite round timeout", simulate("federation.round_timeout_s=inf"), "federation.round_timeout_s must be a finite number in (0, 604800.0]"),
    ("zero timeout", simulate("federation.round_timeout_s=0"), "federation.round_timeout_s must be a finite number in (0, 604800.0]: got 0"),
    ("infinite node wait", simulate("federation.node_wait_s=inf"), "federation.node_wait_s must be a finite number in (0, 604800.0]"),
    ("zero fraction", simulate("federation.fraction_train=0"), "federation.fraction_train must be a finite number in (0, 1]: got 0"),
    ("waiting forever", simulate("federation.min_available_nodes=9"),
     "federation.min_available_nodes=9 exceeds federation.num_clients=3: the server would wait forever"),
    ("quorum above clients", simulate("federation.min_train_replies=5"), "federation.min_train_replies=5 exceeds federation.num_clients=3"),
    ("as many byzantine clients as clients", simulate('federation.aggregation="krum"', "federation.krum_byzantine=3"),
     "federation.krum_byzantine=3 must be below federation.num_clients=3"),
    ("more shards than samples", simulate('federation.partition="shard"', "federation.shards_per_client=1000"),
     "federation.shards_per_client x federation.num_clients = 3000 shards exceed the 240 training samples"),
    ("trim half", simulate("federation.trim_fraction=0.5"), "federation.trim_fraction must be a finite number in [0, 0.5): got 0.5"),
    ("certain faults", simulate("federation.fault_rate=1.0"), "federation.fault_rate must be a finite number in [0, 1): got 1.0"),
    ("unknown fault kind", simulate('federation.fault_kind="hang"'), "federation.fault_kind must be one of crash, timeout: got 'hang'"),
    ("malformed fault schedule", simulate('federation.fault_schedule=["x:1"]'), "'x:1' is not 'round:client'"),
    ("fault outside the run", simulate('federation.fault_schedule=["99:0"]'), "'99:0' is outside rounds 1..4"),
    ("unknown scheduled fault", simulate('federation.fault_schedule=["1:0:explode"]'), "has kind 'explode'"),
    ("noise without clipping", simulate("federation.dp_noise_multiplier=1.0"), "needs federation.dp_clipping_norm"),
    ("input tuning with a statistical head, federated", simulate("model.head.name=ncm"), "federated runs do not support it: use method.name=head_only"),
    ("fine-tuning through a statistical head", train("method.name=partial_finetune", "model.head.name=ncm"),
     "method.name=partial_finetune trains the backbone by gradient through the head, and the NCM head (model.head.name) has no gradient"),
    ("fine-tuning through a statistical head, federated", simulate("method.name=finetune", "model.head.name=ridge"),
     "method.name=finetune trains the backbone by gradient through the head, and the RIDGE head"),
    ("DP with median", simulate("federation.dp_clipping_norm=1.0", 'federation.aggregation="median"'), "not 'median'"),
    ("DP with NCM", simulate("federation.dp_clipping_norm=1.0", 'model.head.name="ncm"'), "cannot protect the NCM head"),
    ("DP with a ridge head", simulate("federation.dp_clipping_norm=1.0", 'model.head.name="ridge"', 'method.name="head_only"'),
     "cannot protect the RIDGE head (model.head.name): its summed statistics are not averaged parameters"),
    ("resume without checkpoints", simulate("federation.resume=true", "federation.checkpoint_every=0"), "needs checkpoints"),
    ("unknown device profile", simulate('federation.device_profiles=["toaster"]'),
     "federation.device_profiles[0] must be one of jetson_nano, jetson_orin"),
    ("no device profile", simulate("federation.device_profiles=[]"), "federation.device_profiles must not be empty"),
    ("too many clients for the data", simulate("federation.num_clients=200", "data.max_train_per_class=10", "federation.backend=inline"),
     "federation.num_clients=200 exceeds the"),
    # ---- config files
    ("config file missing", lambda tmp: ["train", "-c", str(tmp / "nope.toml")], "config file not found"),
    ("config file is a folder", lambda tmp: ["train", "-c", str(tmp)], "is not a file"),
    ("config file unparsable", with_file("bad.toml", "[data\nimage_size = 3"), "cannot parse config file"),
    ("config file not a table", with_file("list.json", "[1, 2, 3]"), "must hold a table"),
    ("config file not text", with_file("binary.toml", b"\xff\xfe\x00\x01"), "cannot parse config file"),
    ("config file huge", with_file("huge.toml", "# padding\n" * 200_000), "bytes; a config is at most 1048576 bytes"),
    ("JSON with a duplicate key", with_file("dup.json", '{"seed": 1, "train": {"lr": 0.1, "lr": 10}}'), "names the key 'lr' twice in one table"),
    ("JSON nested past the recursion limit", with_file("deep.json", nested_json(100_000)), "nests tables or lists more than 32 levels deep"),
    ("JSON nested 40 levels", with_file("deep40.json", nested_json(40)), "nests tables or lists more than 32 levels deep"),
    ("TOML nested past the recursion limit", with_file("deep.toml", "x = " + "[" * 100_000 + "]" * 100_000),
     "nests tables or lists more than 32 levels deep"),
    ("TOML tables 40 deep", with_file("deep.toml", "[" + ".".join(["a"] * 40) + "]\nb = 1\n"), "nests tables or lists more than 32 levels deep"),
    ("JSON integer of 5000 digits", with_file("big.json", '{"seed": ' + "9" * 5000 + "}"), "cannot parse config file"),
    ("JSON NaN", with_file("nan.json", '{"train": {"lr": NaN}}'), "train.lr must be a finite number > 0: got nan"),
    ("TOML inf", with_file("inf.toml", "[train]\nweight_decay = inf\n"), "train.weight_decay must be a finite number >= 0: got inf"),
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
                                         'data.dataset="cifar10"'), "refusing to load 'builtins.eval'"),
    ("CIFAR batch of wrong shape", with_data(_cifar_then(lambda f: (f / "data_batch_1").write_bytes(pickle.dumps({"data": np.zeros((3, 10), np.uint8), "labels": [0, 1, 2]}))),
                                             'data.dataset="cifar10"'), "is not N x 3072"),
    ("CIFAR batch without labels", with_data(_cifar_then(lambda f: (f / "data_batch_2").write_bytes(pickle.dumps({"data": np.zeros((3, 3072), np.uint8)}))),
                                             'data.dataset="cifar10"'), "needs 'data' and 'labels'"),
    ("image folder without root", train('data.dataset="imagefolder"'), "needs data.root"),
    ("image folder without test", with_data(lambda root: _images(root, test=False), 'data.dataset="imagefolder"'), "test not found"),
    ("corrupt image", with_data(lambda root: _images(root, broken=True), 'data.dataset="imagefolder"'), "cannot decode image"),
    ("16-bit images", with_data(lambda root: _images(root, mode="I;16"), 'data.dataset="imagefolder"'), "has mode 'I;16'"),
    # ---- weights files
    ("weights file missing", train("model.weights=\"/nonexistent/w.pt\"", "data.dataset=digits"), "weights file not found"),
    ("weights of other shapes", weights("st-shapes"), "does not fit backbone 'efficientnet_lite0'"),
    ("weights safetensors corrupt", weights("st-corrupt"), "cannot read weights file"),
    ("weights not torch", weights("pt-garbage"), "cannot read weights file"),
    ("weights with code", weights("pt-code"), "cannot read weights file"),
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


# one table: the rows above (configs, data files, weights, checkpoints) and the reliability rows (outputs, NaN
# guards, resources, signals, image folders, certificates) built in tests/cases_reliability.py
CASES += RELIABILITY_CASES


def test_case_names_are_distinct():
    names = [name for name, *_ in CASES]
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)


def assert_one_clear_line(code: int, err: str, message: str) -> None:
    """Exit code 2 and stderr of exactly one line, ``fedcl: error: ...`` holding ``message``."""
    assert code == 2, f"exit code {code}; stderr: {err[-2000:]}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedcl: error: "), err[-2000:]
    assert message in lines[0], lines[0]
    assert "weights_only" not in err  # never torch's advice to unpickle


@pytest.mark.parametrize("name, build, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(name, build, message, tmp_path, capsys):
    code = main(build(tmp_path))
    assert_one_clear_line(code, capsys.readouterr().err, message)
    assert not (tmp_path / "out" / "results.json").exists()  # never a silent wrong run


SUBPROCESS_CASES = ["typo with suggestion", "infinite lr", "unknown backbone", "waiting forever", "config file missing", "truncated IDX"]


@pytest.mark.system
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(name, tmp_path):
    """The same check on a real ``python -m fedcl`` process: nothing else (logs, warnings) reaches stderr."""
    build, message = next((b, m) for n, b, m in CASES if n == name)
    proc = subprocess.run([sys.executable, "-m", "fedcl", *build(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert_one_clear_line(proc.returncode, proc.stderr, message)
