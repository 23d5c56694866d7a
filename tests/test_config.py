import json
import re

import pytest

from fedcl.config import RunConfig, build_config, parse_override, preset_names, read_config_file
from fedcl.errors import ConfigError
from fedcl.federation.settings import FedRunConfig


def test_defaults_and_presets_validate():
    assert isinstance(build_config(), RunConfig)
    assert {"smoke", "default", "fedsmoke"} <= set(preset_names())
    for name in preset_names():
        build_config(name, schema=FedRunConfig)
    with pytest.raises(ConfigError, match="unknown config key 'federation'"):
        build_config("fedsmoke", schema=RunConfig)  # the single-device schema has no federation table


def test_precedence_preset_then_file_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nepochs = 7\nbatch_size = 8\n[model.transform]\nname = "border"\noptions = { width = 2 }\n')
    cfg = build_config("smoke", f, ["train.epochs=3", "model.transform.options.width=5"])
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 8
    assert cfg.model.transform.name == "border" and cfg.model.transform.options == {"width": 5}
    assert cfg.data.max_train_per_class == 100  # from the preset


@pytest.mark.parametrize("text, expected", [
    ("a=1", 1), ("a=0.5", 0.5), ("a=true", True), ("a=[1, 2]", [1, 2]), ("a=none", "none"), ("a=null", None), ('a="x y"', "x y"),
])
def test_override_values(text, expected):
    assert parse_override(text) == ("a", expected)


@pytest.mark.parametrize("override, message", [
    ("train.epoch=2", "unknown config key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("train.epochs=two", "train.epochs: expected an integer"),
    ("train.epochs=0", "train.epochs must be at least 1"),
    ("train.lr=-1", "train.lr must be positive"),
    ("data.image_size=4", "data.image_size must be at least 8"),
    ("data.scenario=online", "data.scenario must be one of"),
    ("model.backbone=resnet19", "unknown backbone 'resnet19' (did you mean 'resnet18'?)"),
    ("model.transform.name=warp", "unknown transform 'warp'"),
    ("model.head.name=mlp", "unknown head 'mlp'"),
    ("method.name=ewc2", "unknown method 'ewc2'"),
    ("data.dataset=mnist", "unknown dataset 'mnist'"),
    ("model.head.name=multi_head", "needs task ids"),
    ("train.device=tpu", "train.device must be"),
    ("nonsense", "is not key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config("smoke", None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        build_config(None, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 1")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        build_config(None, bad)
    with pytest.raises(ConfigError, match="unknown preset 'tiny'"):
        build_config("tiny")


def test_results_json_can_be_rerun(tmp_path):
    cfg = build_config("smoke", None, ["train.epochs=3"])
    f = tmp_path / "results.json"
    f.write_text(json.dumps({"config": cfg.to_dict(), "accuracy_matrix": [[1.0]]}))
    assert read_config_file(f)["train"]["epochs"] == 3
    assert build_config(None, f).train.epochs == 3
