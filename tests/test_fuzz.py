"""Fuzzing (system tier, hypothesis, 1,000 examples each): server checkpoints and client updates either load
as valid, finite state or fail with fedcl's own one-line error; nothing else escapes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from fedcl.federation.checkpoint import (
    FORMAT,
    Checkpoint,
    CheckpointError,
    check_state,
    config_differences,
    load_checkpoint,
    save_checkpoint,
)
from fedcl.federation.codec import QPARAMS, BadUpdateError, decode, encode

pytestmark = pytest.mark.system
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
CONFIG = {"seed": 0, "federation": {"num_clients": 3}, "data": {"num_tasks": 2}}
LAST_ROUND = 4
REFERENCE = {"transform.delta": torch.zeros(2, 3), "head.weight": torch.zeros(4), "head.count": torch.zeros(3, dtype=torch.int64)}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
dtypes = st.sampled_from([np.float32, np.float16, np.float64, np.int8, np.int32, np.int64, np.uint8, np.bool_])
shapes = st.sampled_from([(), (0,), (1,), (4,), (2, 3), (3, 2), (3,), (2, 2, 2)])
numbers = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def arrays(draw) -> np.ndarray:
    shape, dtype = draw(shapes), draw(dtypes)
    values = draw(st.lists(numbers, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    with np.errstate(all="ignore"):
        return np.nan_to_num(np.array(values, dtype=np.float64), nan=0, posinf=1e9, neginf=-1e9).astype(dtype).reshape(shape) \
            if dtype not in (np.float32, np.float16, np.float64) else np.array(values, dtype=dtype).reshape(shape)


def _metadata_changes() -> st.SearchStrategy[dict[str, str]]:
    """Some of a checkpoint's metadata entries replaced by odd or hostile values (often none)."""
    rounds = st.one_of(st.integers(-5, 10**15).map(str), st.text(max_size=8), st.just("9" * 5000), st.just(" 3 "))
    configs = st.one_of(json_values.map(json.dumps), st.text(max_size=12), st.just("[" * 5000), st.just(json.dumps({**CONFIG, "seed": 1})))
    states = st.one_of(json_values.map(json.dumps), st.text(max_size=12))
    return st.fixed_dictionaries({}, optional={"format": st.text(max_size=10), "round": rounds, "config": configs, "state": states})


@st.composite
def checkpoint_tensors(draw) -> dict[str, torch.Tensor]:
    """The model's tensors with arbitrary values (NaN and infinities included), some dropped, replaced or added."""
    tensors = {}
    for key, ref in REFERENCE.items():
        values = draw(st.lists(numbers, min_size=ref.numel(), max_size=ref.numel()))
        tensors[f"global/{key}"] = torch.tensor(values, dtype=torch.float64).nan_to_num(0).to(ref.dtype).reshape(ref.shape) \
            if not ref.is_floating_point() else torch.tensor(values, dtype=ref.dtype).reshape(ref.shape)
    for key in draw(st.sets(st.sampled_from(sorted(tensors)), max_size=1)):
        del tensors[key]
    tensors.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in draw(st.dictionaries(tensor_names, arrays(), max_size=2)).items()})
    return tensors


tensor_names = st.sampled_from(["global/transform.delta", "global/head.weight", "global/head.count", "adam_m/head.weight", "global/x", "x"])


@FUZZ
@given(changes=_metadata_changes(), tensors=checkpoint_tensors(), server_round=st.integers(1, LAST_ROUND),
       flips=st.one_of(st.just([]), st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=3)))
def test_checkpoint_loading_gives_a_valid_checkpoint_or_one_clear_error(changes, tensors, server_round, flips):
    with tempfile.TemporaryDirectory() as folder:
        path = save_checkpoint(Path(folder) / "checkpoint.safetensors", Checkpoint(server_round, CONFIG, tensors, {"run_token": "t"}))
        if changes:
            from safetensors.torch import load_file

            meta = {"format": FORMAT, "round": str(server_round), "config": json.dumps(CONFIG), "state": "{}", **changes}
            save_file(load_file(str(path)), str(path), metadata=meta)
        data = bytearray(path.read_bytes())
        for position, mask in flips:  # damage on disk
            data[position % len(data)] ^= mask
        path.write_bytes(bytes(data))
        try:
            ckpt = load_checkpoint(path, CONFIG, LAST_ROUND)
            state = check_state(ckpt, "global", REFERENCE, path)
        except CheckpointError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            return
    assert 1 <= ckpt.server_round <= LAST_ROUND
    assert not config_differences(ckpt.config, CONFIG)
    assert all(torch.isfinite(t).all() for t in ckpt.tensors.values() if t.is_floating_point())
    assert {k: (v.shape, v.dtype) for k, v in state.items()} == {k: (v.shape, v.dtype) for k, v in REFERENCE.items()}


def test_a_checkpoint_written_by_fedcl_loads_back():
    """The fuzzer's success branch is reachable: a real checkpoint passes every check."""
    with tempfile.TemporaryDirectory() as folder:
        path = save_checkpoint(Path(folder) / "c.safetensors", Checkpoint(2, CONFIG, {f"global/{k}": v for k, v in REFERENCE.items()}, {}))
        assert check_state(load_checkpoint(path, CONFIG, LAST_ROUND), "global", REFERENCE, path).keys() == REFERENCE.keys()


update_keys = st.sampled_from([*REFERENCE, "head.extra", "transform.delta" + QPARAMS, "head.weight" + QPARAMS, "head.count" + QPARAMS])


@FUZZ
@given(entries=st.dictionaries(update_keys, arrays(), max_size=6), quantization=st.sampled_from(["none", "fp16", "int8"]),
       base=st.booleans())
def test_update_validation_accepts_only_matching_finite_state(entries, quantization, base):
    state = dict(encode({k: v + 0.5 for k, v in REFERENCE.items()}, quantization)) if base else {}
    state.update({k: Array(np.ascontiguousarray(v)) for k, v in entries.items()})
    try:
        decoded = decode(ArrayRecord(state), REFERENCE, "client 0")
    except BadUpdateError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("client 0")
        return
    assert decoded.keys() == REFERENCE.keys()
    for key, ref in REFERENCE.items():
        assert decoded[key].shape == ref.shape and decoded[key].dtype == ref.dtype, key
        assert not decoded[key].is_floating_point() or bool(torch.isfinite(decoded[key]).all())
