"""A client with few samples uploads its Gram change as a low-rank factor (fedcl/federation/factors.py): the
federated head is the one the packed upload gives, the upload is far smaller, a client with many samples still
sends packed G, and a malformed factor is refused like any bad update (real ServerApp, ClientApp and Flower
messages, in-process backend)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import MessageType

from fedcl.builder import benchmark_for, build_learner, build_model, client_stream
from fedcl.federation.client_app import handle_query
from fedcl.federation.client_handlers import handle_train
from fedcl.federation.node import partition_id
from fedcl.federation.codec import encode
from fedcl.federation.factors import GRAM_KEY, factor_gram, gram_factor
from fedcl.federation.flower_adapter import task_identity
from fedcl.federation.inline import run_inline
from fedcl.federation.pending import PendingStatistics
from fedcl.federation.server_app import build_server_app, server_model
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_federated
from fedcl.heads.lda import LinearDiscriminant
from fedcl.heads.ridge import RidgeHead
from fedcl.heads.statistics import pack_upper
from tests.test_federated_statistics import RANPAC, assert_same_head, config, federated_model, rel_diff

#: RanPAC's 256-d statistics (D = 256): the factor logic is the same at any D, and D = 1280 costs 5x the time
FULL = ["federation.partition=iid", "federation.fraction_train=1.0", 'federation.device_profiles=["server"]',
        "federation.boundary_jitter=0", RANPAC]
FACTOR = GRAM_KEY + "::factor"


def test_the_factor_is_exact_and_a_function_of_the_gram_matrix_alone():
    g = torch.Generator().manual_seed(0)
    rows = torch.relu(torch.randn(5, 12, generator=g, dtype=torch.float64))
    rows[:, 3] = 0  # an all-zero feature, as ReLU features often have
    factor = gram_factor(rows)
    assert factor.shape == (5, 12) and factor.dtype == torch.float64
    assert rel_diff(factor.T @ factor, rows.T @ rows) <= 1e-13
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    assert rel_diff(gram_factor(rotation @ rows), factor) <= 1e-10  # other rows, same G: the same factor
    assert gram_factor(torch.cat([rows, rows[:1]])).shape[0] == 5  # rank 5 of 6 rows: 5 rows
    blocks = [rows[:2], rows[2:], factor]
    assert rel_diff(factor_gram(blocks, 12), pack_upper(2 * rows.T @ rows)) <= 1e-13


def test_pending_keeps_a_factor_up_to_d_over_2_rows_then_packs():
    d = 8
    rows = torch.randn(d // 2 + 1, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    change = pack_upper(rows.T @ rows)
    small, large = PendingStatistics(), PendingStatistics()
    small.add({GRAM_KEY: pack_upper(rows[:-1].T @ rows[:-1])}, {GRAM_KEY: rows[:-1]})
    assert set(small.send(1)[1]) == {GRAM_KEY} and not small.changes
    small.add({GRAM_KEY: pack_upper(rows[-1:].T @ rows[-1:])}, {GRAM_KEY: rows[-1:]})  # unconfirmed + one more row
    large.add({GRAM_KEY: change}, {GRAM_KEY: rows})
    for pending in (small, large):
        changes, factors = pending.send(2)
        assert not factors and rel_diff(changes[GRAM_KEY], change) <= 1e-12


@pytest.mark.parametrize("head_class", [RidgeHead, LinearDiscriminant])
def test_kept_rows_are_folded_into_the_gram_only_when_it_is_read(head_class):
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(n, 3, generator=g), torch.tensor(labels)) for n, labels in [(4, [0, 1, 2, 0]), (3, [1, 2, 0])]]
    direct, kept, over = (head_class(3, 3) for _ in range(3))
    kept.record_rows(limit=7)
    over.record_rows(limit=5)
    for head in (direct, kept, over):
        for features, labels in batches:
            head.observe(features, labels)
    assert not kept.gram.any() and over.observed_rows() is None and over.gram.any()  # deferred; over the limit: added
    with kept.gram_unfolded():
        assert not kept.state_dict()["gram"].any()  # a factor-only reader leaves it unpacked
        with pytest.raises(RuntimeError, match="while its Gram matrix is read unfolded"):
            kept.observe(*batches[0])  # gathering while held would lose rows
    assert torch.equal(kept.counts, direct.counts)  # refused before anything was added
    assert rel_diff(kept.state_dict()["gram"], direct.gram) <= 1e-12 and rel_diff(over.gram, direct.gram) <= 1e-12
    assert rel_diff(kept.observed_rows(), torch.cat([f for f, _ in batches]).double()) == 0
    again = head_class(3, 3)
    again.record_rows(limit=7)
    again.observe(*batches[1])
    again.load_state_dict(direct.state_dict())  # the kept rows belonged to the replaced state
    assert rel_diff(again.gram_matrix(), direct.gram_matrix()) == 0
    fresh = head_class(3, 3)
    fresh.record_rows(limit=7)
    for features, labels in batches:
        fresh.observe(features, labels)
    assert not fresh.gram.any()
    assert torch.allclose(fresh(batches[0][0]), direct(batches[0][0]), rtol=1e-5, atol=1e-6)  # the classifier folds first
    assert fresh.gram.any()


def test_a_client_whose_change_travels_as_a_factor_never_packs_its_gram(monkeypatch):
    calls = []

    def counting(matrix):
        calls.append(matrix.shape)
        return pack_upper(matrix)

    monkeypatch.setattr("fedcl.heads.statistics.pack_upper", counting)
    factored = _train_reply(config(*FULL), factors=1)
    assert FACTOR in factored and calls == []
    packed = _train_reply(config(*FULL), factors=0)
    assert GRAM_KEY in packed and calls


def test_tiny_clients_send_factors_and_the_head_equals_the_packed_upload(tmp_path):
    runs = {}
    for flag in ("true", "false"):
        cfg = config(*FULL, f"federation.gram_factor={flag}")
        runs[flag] = run_federated(cfg, tmp_path / flag, quiet=True), federated_model(cfg, tmp_path / flag)
    (factored, model), (packed, reference) = runs["true"], runs["false"]
    buffers = dict(model.head.named_buffers())
    for name, buffer in reference.head.named_buffers():
        assert rel_diff(buffers[name], buffer) <= 1e-9, name
    (w, b), (w0, b0) = model.head.solve(), reference.head.solve()
    assert rel_diff(w, w0) <= 1e-9 and rel_diff(b, b0) <= 1e-9
    assert factored["final_avg_accuracy"] == packed["final_avg_accuracy"]
    d = model.head.statistic_dim
    first = factored["communication"]["per_round"][0]["per_client_up"]
    assert first.keys() == packed["communication"]["per_round"][0]["per_client_up"].keys() and first
    for pid, up in first.items():  # a handful of samples (~16): a few rows of D values, not D(D+1)/2 (2 x 16 / D = 1/8)
        assert up < 8 * d * (d + 1) // 2 / 5, (pid, up)
    assert factored["communication"]["bytes_up"] < packed["communication"]["bytes_up"] / 5
    assert factored["rejected_updates"] == [] == packed["rejected_updates"]


def _train_reply(cfg: FedRunConfig, factors: int) -> dict:
    _, _, _, global_state = server_model(cfg)
    sums = {"head.counts", "head.sums", GRAM_KEY}
    content = RecordDict({"arrays": encode({k: v for k, v in global_state.items() if k not in sums}),
                          "config": ConfigRecord({"server-round": 1, "run-token": "", "sums-down": 0, "gram-factor": factors})})
    with task_identity(1, 1, 1):
        reply = handle_train(cfg, Message(content, 1, MessageType.TRAIN), Context(1, 1, {"partition-id": 0}, RecordDict(), {}))
    return {k: v.numpy() for k, v in reply.content.array_records["arrays"].items()}


def test_a_client_sends_a_factor_up_to_d_over_2_samples_and_packed_g_beyond():
    packed = _train_reply(config(*FULL), factors=0)  # a server that does not take factors gets packed G
    n = round(float(packed["head.counts"].sum()))
    assert GRAM_KEY in packed and FACTOR not in packed and n > 1
    # D = 2n: n = D/2 samples (a factor is smaller); D = 2n - 1: n > D/2 (packed G is smaller)
    for d, expected in [(1280, FACTOR), (2 * n, FACTOR), (2 * n - 1, GRAM_KEY)]:
        arrays = _train_reply(config(*FULL, f"model.head.options.projection_dim={0 if d == 1280 else d}"), factors=1)
        assert round(float(arrays["head.counts"].sum())) == n
        assert expected in arrays and ({GRAM_KEY, FACTOR} - {expected}).isdisjoint(arrays), (d, sorted(arrays))
        if expected == FACTOR:
            assert arrays[FACTOR].dtype == np.float64 and arrays[FACTOR].shape[1] == d and arrays[FACTOR].shape[0] <= n


ATTACKS = ["shape", "rows", "nan", "dtype", "key", "both", "bytes", "huge"]
REASONS = {"shape": "has shape", "rows": "has shape", "nan": "NaN or infinite", "dtype": "has dtype float32",
           "key": "unexpected factor 'head.sums::factor'", "both": "sent both packed and as a factor",
           "bytes": "not a readable NumPy array", "huge": "does not match its"}


def _bad_factor(arrays: dict[str, Array], attack: str) -> dict[str, Array]:
    factor = arrays[FACTOR].numpy()
    d = factor.shape[1]
    bad = {"shape": factor[:, :-1], "rows": np.zeros((d // 2 + 1, d)), "nan": np.where(np.arange(d) == 0, np.nan, factor),
           "dtype": factor.astype(np.float32)}
    if attack in bad:
        return {**arrays, FACTOR: Array(np.ascontiguousarray(bad[attack]))}
    if attack == "key":
        return {**{k: v for k, v in arrays.items() if k != FACTOR}, "head.sums::factor": arrays[FACTOR]}
    if attack == "both":
        return {**arrays, GRAM_KEY: Array(pack_upper(torch.from_numpy(factor.T @ factor)).numpy())}
    if attack == "huge":  # a valid header claiming 10^13 rows, and no data: np.load would try to allocate them
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**13, d)})
        return {**arrays, FACTOR: Array(dtype="float64", shape=(10**13, d), stype="numpy.ndarray", data=header.getvalue())}
    return {**arrays, FACTOR: Array(dtype="float64", shape=tuple(factor.shape), stype="numpy.ndarray", data=b"\x93NUMPY garbage")}


def tampering_app(cfg: FedRunConfig, attacks: dict[int, str]) -> ClientApp:
    """The real ClientApp, except that the clients in ``attacks`` break every factor they send."""
    app = ClientApp()

    @app.train()
    def train(msg, context):
        reply = handle_train(cfg, msg, context)
        attack = attacks.get(partition_id(context))
        arrays = reply.content.array_records.get("arrays")
        if attack is None or arrays is None or FACTOR not in arrays:
            return reply
        content = RecordDict({"arrays": ArrayRecord(_bad_factor(dict(arrays.items()), attack)),
                              "metrics": reply.content.metric_records["metrics"]})
        return Message(content, reply_to=msg)

    app.query()(handle_query)
    return app


def honest_head(cfg: FedRunConfig, pids: list[int]):
    """The head fitted on one device on the training data of ``pids`` only."""
    benchmark = benchmark_for(cfg)
    model, method = build_model(cfg, benchmark)
    learner = build_learner(cfg, model, method, benchmark, cfg.seed)
    for pid in pids:
        learner.gathered.tasks = set()
        for experience in client_stream(cfg, pid):
            learner.accumulate_statistics(experience)
    return model, benchmark


def test_malformed_factors_are_refused_and_the_head_is_the_honest_clients(tmp_path):
    honest = 3
    attacks = {honest + i: a for i, a in enumerate(ATTACKS)}
    cfg = config(*FULL, f"federation.num_clients={honest + len(ATTACKS)}", "data.max_train_per_class=20")
    run_inline(build_server_app(cfg, tmp_path), tampering_app(cfg, attacks), cfg.federation.num_clients)
    results = json.loads((tmp_path / "results.json").read_text())
    rejected = results["rejected_updates"]
    for pid, attack in attacks.items():
        mine = [r for r in rejected if f"client {pid} " in r]
        assert mine and all(REASONS[attack] in r for r in mine), (pid, attack, mine)
    assert not [r for r in rejected if any(f"client {pid} " in r for pid in range(honest))]
    central, benchmark = honest_head(cfg, list(range(honest)))
    assert_same_head(federated_model(cfg, tmp_path), central, benchmark)
