"""The config schema: sources and precedence, round trips, machine checks, and its place in the import graph.
Bad values are cases of the one table in test_bad_inputs.py."""

import ast
import copy
import json
import math
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from fedcl.config import (
    DEVICE_PROFILES, FedRunConfig, Machine, RunConfig, build_config, check_machine, config_from_dict, parse_override,
    preset_names, read_config_file,
)
from fedcl.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1] / "fedcl"


def test_defaults_and_presets_validate():
    assert isinstance(build_config(), RunConfig)
    assert {"smoke", "default", "fedsmoke"} <= set(preset_names())
    for name in preset_names():
        assert isinstance(build_config(name, schema=FedRunConfig), FedRunConfig)
    with pytest.raises(ConfigError, match="unknown config key 'federation'"):
        build_config("fedsmoke", schema=RunConfig)  # the single-device schema has no federation table


def test_precedence_preset_then_file_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nepochs = 7\nbatch_size = 8\n[model.transform]\nname = "border"\noptions = { width = 2, depth = 1 }\n')
    cfg = build_config("smoke", f, ["train.epochs=3", "model.transform.options.width=5"])
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 8
    assert cfg.model.transform.name == "border" and cfg.model.transform.options == {"width": 5, "depth": 1}
    assert cfg.data.max_train_per_class == 100  # from the preset


@pytest.mark.parametrize("text, expected", [
    ("a=1", 1), ("a=0.5", 0.5), ("a=true", True), ("a=[1, 2]", [1, 2]), ("a=none", "none"), ("a=null", None), ('a="x y"', "x y"),
])
def test_override_values(text, expected):
    assert parse_override(text) == ("a", expected)


def test_round_trip_copy_and_checked_assignment():
    cfg = build_config("fedsmoke", None, ["federation.krum_byzantine=2", "train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.num_rounds == 4
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())), FedRunConfig)
    assert again == cfg and again.to_dict() == cfg.to_dict()
    copied = copy.deepcopy(cfg)
    copied.data.root = "/elsewhere"
    assert cfg.data.root is None and copied.data.root == "/elsewhere"
    with pytest.raises(ValidationError):
        copied.train.weight_decay = math.inf


def test_the_renamed_weights_key():
    assert build_config(None, None, ['model.weights="w.safetensors"']).model.weights == "w.safetensors"
    with pytest.raises(ConfigError, match=r"^config key 'model.checkpoint' is now 'model.weights'$"):
        build_config(None, None, ['model.checkpoint="w.safetensors"'])
    assert build_config(None, None, ["model.checkpoint=null"]).model.weights is None  # an older results.json re-runs


def test_results_json_can_be_rerun(tmp_path):
    cfg = build_config("smoke", None, ["train.epochs=3"])
    f = tmp_path / "results.json"
    f.write_text(json.dumps({"config": cfg.to_dict(), "accuracy_matrix": [[1.0]]}))
    assert read_config_file(f)["train"]["epochs"] == 3
    assert build_config(None, f).train.epochs == 3


GPU_BOX = Machine(cpus=8, cuda_devices=2, mps=False)
CPU_BOX = Machine(cpus=2, cuda_devices=0, mps=False)


@pytest.mark.parametrize("overrides, machine, message", [
    (["train.device=cuda:1", "train.precision=fp16"], GPU_BOX, None),
    (["train.precision=bf16"], GPU_BOX, None),  # auto resolves to the GPU
    (["train.device=cuda:2"], GPU_BOX, "train.device=cuda:2 is not a GPU of this machine (it has cuda:0..cuda:1)"),
    (["train.device=cpu", "train.precision=fp16"], GPU_BOX, "train.precision=fp16 on a CPU would be much slower"),
    (["train.precision=bf16"], CPU_BOX, "train.precision=bf16 on a CPU would be much slower"),
    (["train.device=mps"], CPU_BOX, "train.device=mps needs Apple's Metal"),
    (["federation.client_num_gpus=0.5"], GPU_BOX, None),
    (["federation.client_num_gpus=3"], GPU_BOX, "federation.client_num_gpus=3 asks for more GPUs than this machine has (2 CUDA GPU(s))"),
    (["federation.client_num_cpus=8"], GPU_BOX, None),
    (["federation.client_num_cpus=3"], CPU_BOX, "federation.client_num_cpus=3 exceeds the 2 CPUs of this machine"),
    (["federation.client_num_cpus=3", 'federation.ray_address="10.0.0.1:6379"'], CPU_BOX, None),  # a cluster has its own
    (["federation.client_num_cpus=3", "federation.backend=inline"], CPU_BOX, None),
])
def test_machine_checks(overrides, machine, message):
    cfg = build_config("fedsmoke", None, overrides, machine=False)
    if message is None:
        check_machine(cfg, machine)
    else:
        with pytest.raises(ConfigError, match="^" + re.escape(message)):
            check_machine(cfg, machine)


def test_device_profile_names_are_the_profiles_table():
    from fedcl.federation.profiles import PROFILES

    assert set(DEVICE_PROFILES) == set(PROFILES)


def _imports(path: Path) -> set[str]:
    """fedcl modules that ``path`` imports at run time (at any depth in the file, lazily or not; not for type checkers)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for n in ast.walk(block)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedcl"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("fedcl"))
    return out


def _module_graph() -> dict[str, set[str]]:
    paths = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in paths and m != name} for name, path in paths.items()}


def test_the_config_is_at_the_bottom_of_the_import_graph():
    graph = _module_graph()
    for name, imported in graph.items():
        if name.startswith("fedcl.config") or name == "fedcl.errors":
            assert imported <= {"fedcl.errors"} | {m for m in graph if m.startswith("fedcl.config")}, (name, imported)
    assert graph["fedcl.errors"] == set()


def test_no_import_cycles_in_the_package():
    graph = _module_graph()
    # a module registering itself with its own package (``from fedcl.heads import HEADS``) is not a cycle; anything else is
    edges = {a: {b for b in bs if not a.startswith(b + ".")} for a, bs in graph.items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges[node]):
            assert nxt not in path, "import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt])
            if nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for start in sorted(edges):
        visit(start, [start])


def _leaf_fields(model=FedRunConfig, prefix=()):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _leaf_fields(field.annotation, prefix + (name,))
        else:
            yield prefix + (name,), field


def _typed_keys(kind):
    defaults = FedRunConfig().to_dict()
    out = []
    for key, _ in _leaf_fields():
        value = defaults
        for part in key:
            value = value[part]
        if type(value) is kind:
            out.append(".".join(key))
    return out


@pytest.mark.parametrize("key", _typed_keys(float))
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_every_float_key_refuses_non_finite_values(key, bad):
    with pytest.raises(ConfigError, match="^" + re.escape(key) + " must be a finite number"):
        config_from_dict(_nest_one(key, bad))


@pytest.mark.parametrize("key", _typed_keys(int))
def test_every_integer_key_refuses_values_beyond_64_bits(key):
    with pytest.raises(ConfigError, match="^" + re.escape(key) + " must be an integer in"):
        config_from_dict(_nest_one(key, 2**64))


def _nest_one(key, value):
    out = node = {}
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


@pytest.mark.parametrize("values", [[1], "seed=1", None, 3])
def test_a_config_that_is_not_a_table(values):
    with pytest.raises(ConfigError, match="^a config must be a table of keys and values"):
        config_from_dict(values)
