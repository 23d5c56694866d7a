"""Config parsing under hypothesis (system tier, 1,000 examples each, derandomized): whatever a user writes,
in a dict, an override or a file, the result is a valid config or exactly one line of ConfigError naming a
key they gave; never another exception."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fedcl.config import FedRunConfig, build_config, config_from_dict, parse_override
from fedcl.errors import ConfigError

FUZZ = settings(max_examples=1000, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _keys(model: type[BaseModel] = FedRunConfig, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    keys = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys.append(prefix + (name,))
            keys += _keys(field.annotation, prefix + (name,))
        else:
            keys.append(prefix + (name,))
    return keys


KEYS = _keys()
values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "adam", "iid", "shard", "krum", "ray", "inline", "cpu", "cuda", "cuda:7", "mps", "fp16", "bf16", "crash",
                     "laptop", "linear", "multi_head", "ncm", "none", "additive", "1:0", "2:1:timeout", "x:y", "task_incremental"]),
    st.text(max_size=6), st.lists(st.integers(-2, 12), max_size=6), st.lists(st.sampled_from(["laptop", "phone", "x", "1:0"]), max_size=3),
    st.dictionaries(st.sampled_from(["ewc", "replay", "lwf", "strength", "x"]),
                    st.one_of(st.integers(0, 5), st.dictionaries(st.just("buffer_size"), st.integers(-1, 50), max_size=1)), max_size=2),
)
unknown_keys = st.tuples(st.sampled_from(["data", "train", "federation", "model", "zzz"]), st.text("abcdefghij_.\n", min_size=1, max_size=8))


DEFAULTS = FedRunConfig().to_dict()


def _default(key: tuple[str, ...]) -> object:
    node: object = DEFAULTS
    for part in key:
        node = node[part]  # type: ignore[index]
    return copy.deepcopy(node)  # a fresh copy: examples nest values into it, and DEFAULTS must not change


#: a key with, half the time, a value of the right kind (its default or a nearby number), else anything
EDGES = [math.inf, -math.inf, math.nan, 0.0, -1.0, 1e-300, 1e300, 0, -1, 2**31, 2**32, 2**63, 10**30]


def _near(default: object) -> st.SearchStrategy:
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return st.just(default)
    return st.one_of(st.sampled_from(EDGES), st.floats(allow_nan=True, allow_infinity=True) if isinstance(default, float) else st.integers())


pair = st.sampled_from(KEYS).flatmap(lambda key: st.tuples(st.just(key), st.one_of(
    st.just(_default(key)), st.just(_default(key)), _near(_default(key)), values)))
pairs = st.lists(st.one_of(pair, pair, pair, st.tuples(unknown_keys, values)), max_size=6)


def _nested(pairs: list[tuple[tuple[str, ...], object]]) -> dict:
    out: dict = {}
    for path, value in pairs:
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value
    return out


def _get(cfg: object, key: tuple[str, ...]) -> object:
    for part in key:
        cfg = getattr(cfg, part)
    return cfg


def _floats(value: object) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


def _is_one_line(exc: ConfigError) -> str:
    message = str(exc)
    event("refused")
    assert message and "\n" not in message and "\r" not in message and len(message) < 600, repr(message)
    return message


def schema_floats(cfg: FedRunConfig) -> list[float]:
    """Every float the schema itself types (option tables are free-form: their components check them)."""
    d = cfg.to_dict()
    del d["method"]
    d["model"]["transform"]["options"] = d["model"]["head"]["options"] = {}
    return _floats(d)


@pytest.mark.system
@FUZZ
@given(pairs)
def test_any_dict_is_a_valid_config_or_one_line_naming_a_given_key(pairs):
    raw = _nested(pairs)
    given_keys = {".".join(path[:i]) for path, _ in pairs for i in range(1, len(path) + 1)}
    try:
        cfg = config_from_dict(raw, FedRunConfig)
    except ConfigError as exc:
        message = _is_one_line(exc)
        assert any(k in message for k in given_keys if k) or not raw, message
        return
    event("valid config")
    assert config_from_dict(cfg.to_dict(), FedRunConfig) == cfg  # what was accepted survives a round trip unchanged
    assert all(math.isfinite(f) for f in schema_floats(cfg))
    f = cfg.federation
    assert 1 <= f.min_train_replies <= f.num_clients and f.min_available_nodes <= f.num_clients and 0 <= cfg.seed < 2**32
    assert 8 <= cfg.data.image_size <= 1024 and 0 < f.fraction_train <= 1 and 0 <= f.fault_rate < 1


@pytest.mark.system
@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(st.text(max_size=12), values.map(json.dumps))), min_size=1, max_size=3))
def test_any_override_sets_its_key_or_fails_naming_it(overrides):
    texts = [f"{'.'.join(key)}={raw}" for key, raw in overrides]
    try:
        parsed = [parse_override(t) for t in texts]
        cfg = build_config(None, None, texts)  # the machine checks too
    except ConfigError as exc:
        message = _is_one_line(exc)
        assert any(".".join(key) in message for key, _ in overrides), message
        return
    event("valid config")
    names = [name for name, _ in parsed]
    for name, value in dict(parsed).items():  # the last override of a key wins
        related = [o for o in names if o != name and (o.startswith(name + ".") or name.startswith(o + "."))]
        stored = _get(cfg, tuple(name.split(".")))
        if not related and not isinstance(stored, BaseModel):
            assert stored == value, (name, value, stored)


@pytest.mark.system
@FUZZ
@given(st.one_of(
    pairs.map(lambda p: json.dumps(_nested(p)).encode()),
    st.text(max_size=200).map(str.encode), st.binary(max_size=200),
    st.integers(1, 60).map(lambda n: ('{"data": {"domains": ' + "[" * n + "]" * n + "}}").encode()),
), st.sampled_from([".json", ".toml"]))
def test_any_config_file_is_read_or_refused_in_one_line(tmp_path_factory, content, suffix):
    """Files of any content: valid JSON of random keys and values, random text and bytes, and nesting up to 60 deep."""
    path = tmp_path_factory.mktemp("fuzz") / f"config{suffix}"
    path.write_bytes(content)
    try:
        cfg = build_config(None, path)
    except ConfigError as exc:
        _is_one_line(exc)
        return
    event("valid config")
    assert isinstance(cfg, FedRunConfig) and all(math.isfinite(f) for f in schema_floats(cfg))
