"""Property-based tests (hypothesis): client-update validation and aggregation accept exactly what they
should, and fail only with fedcl's own one-line errors. Config parsing is fuzzed in test_config_fuzz.py."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcl.federation.aggregation import ClientUpdate, aggregate
from fedcl.federation.codec import BadUpdateError, decode, encode

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------- update validation
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
REFERENCE_DTYPES = [torch.float32, torch.float64, torch.int64]


@st.composite
def reference_states(draw):
    n = draw(st.integers(1, 4))
    return {f"part{i}.w": torch.zeros(draw(shapes), dtype=draw(st.sampled_from(REFERENCE_DTYPES))) for i in range(n)}


MUTATIONS = ["none", "drop", "extra", "backbone", "shape", "dtype", "nan", "inf"]


@SETTINGS
@given(reference_states(), st.sampled_from(MUTATIONS), st.sampled_from(["none", "fp16", "int8"]), st.data())
def test_update_validation_accepts_exactly_well_formed_updates(reference, mutation, quantization, data):
    key = data.draw(st.sampled_from(sorted(reference)))
    state = {k: (torch.rand(v.shape) * 4).to(v.dtype) for k, v in reference.items()}
    ref = reference[key]
    if mutation == "drop":
        del state[key]
    elif mutation == "extra":
        state["head.extra"] = torch.zeros(2)
    elif mutation == "backbone":
        state["backbone.conv_stem.weight"] = torch.zeros(3)
    elif mutation == "shape":
        state[key] = torch.zeros((*ref.shape, 2), dtype=ref.dtype)
    elif mutation == "dtype":
        state[key] = torch.zeros(ref.shape, dtype=torch.int32 if ref.is_floating_point() else torch.float32)
    elif mutation in ("nan", "inf"):
        if not ref.is_floating_point() or ref.numel() == 0:
            mutation = "none"  # integers hold no NaN; an empty tensor holds nothing
        else:
            state[key] = state[key].clone()
            state[key].view(-1)[0] = math.nan if mutation == "nan" else math.inf
    record = encode(state, "none" if mutation in ("nan", "inf") else quantization)
    if mutation == "none":
        decoded = decode(record, reference)
        assert set(decoded) == set(reference)
        for k, v in decoded.items():
            assert v.shape == reference[k].shape and v.dtype == reference[k].dtype and torch.isfinite(v.double()).all()
            if quantization == "none" or not reference[k].dtype == torch.float32:
                assert torch.equal(v, state[k])
            else:
                assert torch.allclose(v, state[k], atol=4 / 255 + 0.01, rtol=1e-3)
    else:
        try:
            decode(record, reference, source="client 7")
        except BadUpdateError as exc:
            assert str(exc).startswith("client 7: ")
        else:
            raise AssertionError(f"{mutation} update was accepted")


@SETTINGS
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.integers(1, 50)), min_size=1, max_size=6))
def test_weighted_average_is_finite_and_within_the_updates(updates):
    g = {"w": torch.zeros(3)}
    client_updates = [ClientUpdate({"w": torch.full((3,), v)}, n, [n], [n]) for v, n in updates]
    out = aggregate(g, client_updates, {"w": "examples"})["w"]
    lo, hi = min(v for v, _ in updates), max(v for v, _ in updates)
    assert torch.isfinite(out).all()
    assert np.all(out.numpy() >= np.float32(lo) - abs(lo) * 1e-6 - 1e-6) and np.all(out.numpy() <= np.float32(hi) + abs(hi) * 1e-6 + 1e-6)
