"""Federation building blocks, checked against values computed by hand."""

import io
import os
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedcl.errors import FedclError
from fedcl.federation.aggregation import ClientUpdate, aggregate
from fedcl.federation.codec import BadUpdateError, decode, encode
from fedcl.federation import partition_cache
from fedcl.federation.partitions import cached_partition_indices, partition_indices
from fedcl.federation.replies import client_error
from fedcl.federation.profiles import PROFILES, client_profile, is_unavailable, simulated_client_time
from fedcl.federation.schedule import TaskSchedule
from fedcl.federation.server_app import first_reply_wait_s, wait_for_nodes
from fedcl.federation.server_optimizer import ServerAdam


def test_class_aware_task_aware_and_sum_aggregation_by_hand():
    g = {"head.fc.weight": torch.zeros(3, 2), "head.fc.bias": torch.full((3,), 9.0), "transform.delta": torch.zeros(2),
         "transform.transforms.1.bias": torch.full((2,), 5.0), "head.sums": torch.ones(3), }
    kinds = {"head.fc.weight": "class_rows", "head.fc.bias": "class_rows", "transform.delta": "examples",
             "transform.transforms.1.bias": "task:1", "head.sums": "sum"}
    a = ClientUpdate({"head.fc.weight": torch.ones(3, 2), "head.fc.bias": torch.ones(3), "transform.delta": torch.ones(2),
                      "transform.transforms.1.bias": torch.full((2,), 2.0), "head.sums": torch.full((3,), 3.0)}, 10, [10, 0, 0], [10, 0])
    b = ClientUpdate({"head.fc.weight": 4 * torch.ones(3, 2), "head.fc.bias": 4 * torch.ones(3), "transform.delta": 4 * torch.ones(2),
                      "transform.transforms.1.bias": torch.full((2,), 8.0), "head.sums": torch.full((3,), 2.0)}, 30, [10, 20, 0], [0, 30])
    out = aggregate(g, [a, b], kinds)
    # class 0 seen by both (10 + 10 examples): (1 + 4) / 2; class 1 only by b; class 2 by nobody: keep global
    assert torch.allclose(out["head.fc.weight"], torch.tensor([[2.5, 2.5], [4.0, 4.0], [0.0, 0.0]]))
    assert torch.allclose(out["head.fc.bias"], torch.tensor([2.5, 4.0, 9.0]))
    assert torch.allclose(out["transform.delta"], torch.full((2,), (10 * 1 + 30 * 4) / 40))
    assert torch.allclose(out["transform.transforms.1.bias"], torch.full((2,), 8.0))  # only b trained task 1
    assert torch.allclose(out["head.sums"], torch.full((3,), 1.0 + (3 - 1) + (2 - 1)))  # global + sum of changes
    assert aggregate(g, [], kinds)["head.fc.bias"].tolist() == [9.0, 9.0, 9.0]


def test_server_adam_moves_towards_the_average():
    g = {"w": torch.zeros(3)}
    opt = ServerAdam(lr=0.1)
    out = opt.step(g, {"w": torch.tensor([1.0, -1.0, 0.0])}, {"w": "examples"})
    assert out["w"][0] > 0 > out["w"][1] and out["w"][2] == 0


@pytest.mark.parametrize("q, tol, ratio", [("none", 0.0, 1.0), ("fp16", 2e-3, 0.5), ("int8", 0.02, 0.25)])
def test_quantisation_round_trip_and_size(q, tol, ratio):
    state = {"w": torch.randn(20, 500), "n": torch.arange(4, dtype=torch.float64)}
    record = encode(state, q)
    back = decode(record, state)
    assert max((back[k] - state[k]).abs().max().item() for k in state) <= tol * 4
    assert back["n"].dtype == torch.float64 and torch.equal(back["n"], state["n"])
    raw = sum(record[k].numpy().nbytes for k in record)
    assert raw == pytest.approx(ratio * 4 * 20 * 500 + 32, rel=0.01)


def test_bad_updates_are_named():
    ref = {"a": torch.zeros(2, 2), "b": torch.zeros(3)}
    with pytest.raises(BadUpdateError, match="client 7.*missing \\['b'\\]"):
        decode(encode({"a": torch.zeros(2, 2)}), ref, source="client 7")
    with pytest.raises(BadUpdateError, match="'b' has shape \\(4,\\)"):
        decode(encode({"a": torch.zeros(2, 2), "b": torch.zeros(4)}), ref)
    with pytest.raises(BadUpdateError, match="'a' holds NaN"):
        decode(encode({"a": torch.full((2, 2), float("nan")), "b": torch.zeros(3)}), ref)
    with pytest.raises(BadUpdateError, match="unexpected"):
        decode(encode({**ref, "backbone.w": torch.zeros(1)}), ref)


def test_an_array_header_that_claims_more_than_its_bytes_is_refused_before_any_allocation():
    """A 128-byte reply whose header claims 10^13 x 4 float32 values: np.load would try to allocate 160 TB."""
    ref = {"a": torch.zeros(2, 2)}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**13, 4)})
    record = ArrayRecord({"a": Array(dtype="float32", shape=(10**13, 4), stype="numpy.ndarray", data=header.getvalue())})
    with pytest.raises(BadUpdateError, match="'a': its header .* does not match its 128 bytes"):
        decode(record, ref)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    record = ArrayRecord({"a": Array(dtype="object", shape=(2,), stype="numpy.ndarray", data=pickled.getvalue())})
    with pytest.raises(BadUpdateError, match="does not match"):
        decode(record, ref)


def test_task_schedule_is_per_client_and_deterministic():
    s = TaskSchedule(num_tasks=3, rounds_per_task=4, jitter=2, task_order="per_client", seed=1)
    assert s.num_rounds == 12
    starts = [s.starts(c) for c in range(20)]
    assert starts == [TaskSchedule(3, 4, 2, "per_client", 1).starts(c) for c in range(20)]
    assert all(st[0] == 1 and 5 <= st[1] <= 7 and 9 <= st[2] <= 11 for st in starts)
    assert len({tuple(st) for st in starts}) > 1  # clients switch at different rounds
    assert len({tuple(s.order(c)) for c in range(20)}) > 1 and all(sorted(s.order(c)) == [0, 1, 2] for c in range(20))
    c = 3
    for r in range(1, 13):
        pos = sum(1 for st in s.starts(c) if st <= r) - 1
        assert s.task(c, r) == s.order(c)[pos] and s.seen_tasks(c, r) == s.order(c)[: pos + 1]
    assert s.boundary_rounds(20) == [max(st[1] for st in starts) - 1, max(st[2] for st in starts) - 1, 12]


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shard"])
def test_partitions_cover_every_sample_once(kind):
    labels = np.repeat(np.arange(10), 40)
    parts = partition_indices(labels, kind, num_clients=8, alpha=0.3, shards_per_client=2, seed=4)
    joined = np.sort(np.concatenate(parts))
    assert len(parts) == 8
    if kind != "shard":  # shards may leave a remainder unassigned
        assert np.array_equal(joined, np.arange(400))
    assert len(np.unique(joined)) == len(joined)
    again = partition_indices(labels, kind, num_clients=8, alpha=0.3, shards_per_client=2, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(parts, again))
    if kind == "dirichlet":
        class_spread = [len(np.unique(labels[p])) for p in parts if len(p)]
        assert min(class_spread) < 10  # non-IID


def _cached(labels, cache, **settings):
    args = {"kind": "dirichlet", "num_clients": 6, "alpha": 0.3, "shards_per_client": 2, "seed": 4, **settings}
    return cached_partition_indices(labels, args["kind"], args["num_clients"], args["alpha"], args["shards_per_client"],
                                    args["seed"], cache)


def test_a_cached_partition_is_read_back_without_computing(tmp_path, monkeypatch):
    from fedcl.federation import partitions

    labels = np.random.default_rng(2).integers(0, 5, 300)
    first = _cached(labels, tmp_path)
    assert len(os.listdir(tmp_path / "partitions")) == 1
    monkeypatch.setattr(partitions, "partition_indices", lambda *a: pytest.fail("computed again"))
    again = _cached(labels, tmp_path)
    assert len(again) == 6 and all(np.array_equal(x, y) for x, y in zip(first, again))
    expected = partition_indices(labels, "dirichlet", 6, 0.3, 2, 4)
    assert all(np.array_equal(x, y) for x, y in zip(first, expected))


def test_each_setting_and_the_labels_name_their_own_cache_file(tmp_path):
    labels = np.random.default_rng(2).integers(0, 5, 300)
    variants = [{}, {"kind": "iid"}, {"num_clients": 7}, {"alpha": 0.31}, {"kind": "shard", "shards_per_client": 3},
                {"kind": "shard"}, {"seed": 5}]
    for v in variants:
        _cached(labels, tmp_path, **v)
    swapped = labels.copy()
    swapped[[0, 1]] = labels[[1, 0]] if labels[0] != labels[1] else (labels[0], (labels[1] + 1) % 5)
    _cached(swapped, tmp_path)
    assert len(os.listdir(tmp_path / "partitions")) == len(variants) + 1


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _archive(path, members: dict, compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)


def _huge_header() -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
    return buffer.getvalue()


class _Blocked(BaseException):
    """Raised by the alarm: no ``except Exception`` in the reader swallows it."""


def _timeout(*_):
    raise _Blocked("reading the cache blocked")


class _Marker:
    """Unpickling it writes a file: any unpickling of the cache would show."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


ROWS, SIZES = np.arange(12, dtype=np.int64), np.full(6, 2, dtype=np.int64)
HOSTILE = {  # name -> writer of a file at the cache path, for 6 clients and 300 samples
    "garbage": lambda p: p.write_bytes(b"PK\x03\x04 not a zip"),
    "a plain .npy": lambda p: np.save(p.open("wb"), ROWS),
    "compressed members": lambda p: np.savez_compressed(p.open("wb"), rows=ROWS, sizes=SIZES),
    "an extra member": lambda p: _archive(p, {"rows.npy": _npy(ROWS), "sizes.npy": _npy(SIZES), "x.npy": _npy(ROWS)}),
    "float rows": lambda p: _archive(p, {"rows.npy": _npy(ROWS.astype(np.float64)), "sizes.npy": _npy(SIZES)}),
    "2-D rows": lambda p: _archive(p, {"rows.npy": _npy(ROWS.reshape(6, 2)), "sizes.npy": _npy(SIZES)}),
    "a header promising 10**12 rows": lambda p: _archive(p, {"rows.npy": _huge_header() + ROWS.tobytes(), "sizes.npy": _npy(SIZES)}),
    "sizes that wrap around in int64": lambda p: _archive(p, {"rows.npy": _npy(ROWS), "sizes.npy": _npy(
        np.array([2**63 - 1, 2**63 - 1, 14, 0, 0, 0], dtype=np.int64))}),
    "overlapping rows": lambda p: _archive(p, {"rows.npy": _npy(np.zeros(12, np.int64)), "sizes.npy": _npy(SIZES)}),
    "rows out of range": lambda p: _archive(p, {"rows.npy": _npy(ROWS + 1000), "sizes.npy": _npy(SIZES)}),
    "wrong client count": lambda p: _archive(p, {"rows.npy": _npy(ROWS), "sizes.npy": _npy(np.full(4, 3, np.int64))}),
    "sizes not adding up": lambda p: _archive(p, {"rows.npy": _npy(ROWS), "sizes.npy": _npy(np.full(6, 3, np.int64))}),
    "an unsorted partition": lambda p: _archive(p, {"rows.npy": _npy(ROWS[::-1].copy()), "sizes.npy": _npy(SIZES)}),
    "a folder": lambda p: p.mkdir(),
    "a FIFO": lambda p: os.mkfifo(p),
}


@pytest.mark.parametrize("how", sorted(HOSTILE))
def test_a_hostile_cache_file_is_not_used(tmp_path, how):
    path = tmp_path / "partitions.npz"
    HOSTILE[how](path)
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(5)  # a FIFO must not block the reader
    try:
        assert partition_cache.load(path, 6, 300) is None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    _archive(path.with_suffix(".ok"), {"rows.npy": _npy(ROWS), "sizes.npy": _npy(SIZES)})  # the same, well formed, is read
    assert [len(p) for p in partition_cache.load(path.with_suffix(".ok"), 6, 300)] == [2] * 6


def test_a_cache_file_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    rows = np.array([_Marker(marker)] * 12, dtype=object)
    _archive(tmp_path / "p.npz", {"rows.npy": _npy(rows), "sizes.npy": _npy(SIZES)})
    assert partition_cache.load(tmp_path / "p.npz", 6, 300) is None and not marker.exists()


def test_a_compressed_bomb_is_refused_before_it_is_inflated(tmp_path):
    import tracemalloc

    bomb = _npy(np.zeros(25_000_000, np.int64))  # 200 MB of zeros, about 0.2 MB compressed
    _archive(tmp_path / "bomb.npz", {"rows.npy": bomb, "sizes.npy": _npy(SIZES)}, zipfile.ZIP_DEFLATED)
    del bomb
    tracemalloc.start()
    try:
        assert partition_cache.load(tmp_path / "bomb.npz", 6, 30_000_000) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak


@pytest.mark.parametrize("how", ["garbage", "sizes that wrap around in int64", "a folder"])
def test_a_damaged_cache_file_is_computed_again(tmp_path, how):
    labels = np.random.default_rng(2).integers(0, 5, 300)
    first = _cached(labels, tmp_path)
    (path,) = (tmp_path / "partitions").iterdir()
    path.unlink()
    HOSTILE[how](path)
    again = _cached(labels, tmp_path)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True)) and len(again) == 6
    if how != "a folder":  # a folder in the way is left alone (the cache is skipped)
        assert all(np.array_equal(x, y) for x, y in zip(first, partition_cache.load(path, 6, 300), strict=True)), "not replaced"
        assert oct(path.stat().st_mode)[-3:] == "644"  # SuperNodes of other users may read it


def test_a_killed_writers_temporary_file_is_removed_once_stale(tmp_path):
    (tmp_path / "partitions").mkdir()
    stale, fresh = tmp_path / "partitions" / ".fedcl-x.npz.a.tmp", tmp_path / "partitions" / ".fedcl-x.npz.b.tmp"
    stale.write_bytes(b"half"), fresh.write_bytes(b"being written")
    os.utime(stale, (0, os.stat(stale).st_mtime - 2 * partition_cache.STALE_S))
    _cached(np.random.default_rng(2).integers(0, 5, 300), tmp_path)
    assert not stale.exists() and fresh.exists()


def test_an_unwritable_cache_is_skipped(tmp_path):
    (tmp_path / "partitions").write_text("a file where the cache folder goes")
    labels = np.random.default_rng(2).integers(0, 5, 300)
    parts = _cached(labels, tmp_path)
    assert sum(len(p) for p in parts) == 300 and (tmp_path / "partitions").read_text().startswith("a file")


def test_device_profiles_and_simulated_time():
    names = ["jetson_nano", "phone"]
    assert client_profile(names, 3, 0) == client_profile(names, 3, 0)
    assert {client_profile(names, c, 0).name for c in range(30)} == set(names)
    p = PROFILES["phone"]
    # 1 MB down at 20 Mbit/s + 2 s compute at 0.4x + 0.5 MB up at 2 Mbit/s
    assert simulated_client_time(p, 2.0, 1_000_000, 500_000) == pytest.approx(0.4 + 5.0 + 2.0)
    rate = np.mean([is_unavailable(p, c, r, 0) for c in range(50) for r in range(40)])
    assert 0.15 < rate < 0.25


def test_fewer_nodes_than_minimum_fails_fast():
    class TwoNodes:
        def get_node_ids(self):
            return [11, 12]

    with pytest.raises(FedclError, match="only 2 of the 3 required SuperNodes"):
        wait_for_nodes(TwoNodes(), 3, timeout_s=1)
    assert wait_for_nodes(TwoNodes(), 2, timeout_s=1) == 2


def test_proximal_term_is_zero_at_the_global_model_and_grows_with_distance():
    from fedcl.methods.proximal import Proximal

    w = torch.nn.Parameter(torch.ones(3))
    term = Proximal(0.5)
    term.anchor([w])
    assert term.penalty(None, None).item() == 0.0
    with torch.no_grad():
        w.add_(2.0)
    assert term.penalty(None, None).item() == pytest.approx(0.5 * 0.5 * 3 * 4)
    zero = Proximal(0.0)
    zero.anchor([w])
    assert zero.penalty(None, None) is None


@pytest.mark.parametrize("kind", ["dirichlet", "shard"])
def test_partitions_are_read_from_the_assignment_once_loaded(monkeypatch, kind):
    """Many clients: a partitioner that keeps its assignment builds one Dataset (the first partition), not one per
    client, and every client gets the rows ``load_partition`` would give."""
    import warnings

    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, ShardPartitioner

    from fedcl.federation import partitions

    labels = np.random.default_rng(1).integers(0, 10, 600)
    loads = [0]
    cls = DirichletPartitioner if kind == "dirichlet" else ShardPartitioner
    load = cls.load_partition

    def counted(self, partition_id):
        loads[0] += 1
        return load(self, partition_id)

    monkeypatch.setattr(cls, "load_partition", counted)
    parts = partition_indices(labels, kind, num_clients=40, alpha=0.3, shards_per_client=2, seed=4)
    assert loads[0] == 1
    partitioner = partitions._partitioner(kind, 40, 0.3, 2, 4)
    rows = np.random.default_rng(4).permutation(len(labels))
    partitioner.dataset = Dataset.from_dict({"label": labels[rows].astype(np.int64), "row": rows})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = [np.sort(np.asarray(load(partitioner, c)["row"], dtype=np.int64)) for c in range(40)]
    assert all(np.array_equal(p, e) for p, e in zip(parts, expected)) and len(parts) == 40


def test_building_a_client_model_queues_no_lazy_device_seeds(monkeypatch):
    """Each client's model is built with the config's seed: on a machine without the accelerator, seeding
    queues no lazy CUDA/XPU/MTIA seed (each captured a stack trace: ~10 ms per client) and initialises the
    same weights."""
    import traceback

    from fedcl.builder import benchmark_for, build_model
    from fedcl.config import build_config
    from fedcl.federation.settings import FedRunConfig

    if torch.cuda.is_available():
        pytest.skip("CUDA present: seeds are applied, not queued")
    cfg = build_config("fedsmoke", None, ["method.name=head_only", "model.head.name=linear"], schema=FedRunConfig)
    benchmark = benchmark_for(cfg)
    stacks, format_stack = [0], traceback.format_stack

    def counted(*args, **kwargs):
        stacks[0] += 1
        return format_stack(*args, **kwargs)

    monkeypatch.setattr(traceback, "format_stack", counted)
    model, _ = build_model(cfg, benchmark)
    assert stacks[0] == 0
    torch.manual_seed(cfg.seed + 1)
    again, _ = build_model(cfg, benchmark)
    for key, value in model.head.state_dict().items():
        assert torch.equal(value, again.head.state_dict()[key])


def test_a_new_nodes_first_reply_is_awaited_the_longer_of_node_wait_and_round_timeout():
    from fedcl.config import build_config
    from fedcl.federation.settings import FedRunConfig

    def wait(node_wait_s, round_timeout_s):
        cfg = build_config("fedsmoke", None, [f"federation.node_wait_s={node_wait_s}", f"federation.round_timeout_s={round_timeout_s}"],
                          schema=FedRunConfig)
        return first_reply_wait_s(cfg.federation)

    assert wait(60, 600) == 600  # a slow edge device starting its ClientApp is not dropped by a short node_wait_s
    assert wait(23, 15) == 23  # nor by a short round deadline


RAY_REASON = (Path(__file__).parent / "data" / "ray_client_error.txt").read_text()  # as Flower 1.42's Ray backend sends it
INLINE_CHAINED = ("RuntimeError: bad\nTraceback (most recent call last):\n  File \"a.py\", line 2, in f\nKeyError: 'x'\n\nThe above "
                  "exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n"
                  "  File \"a.py\", line 4, in f\nRuntimeError: bad\n")  # fedcl's inline backend, a chained exception


@pytest.mark.parametrize("reason, expected", [
    ("InjectedFault: client 1 crashed in round 1 (injected fault)\nTraceback (most recent call last):\n  File \"x.py\"",
     "InjectedFault: client 1 crashed in round 1 (injected fault)"),  # the inline backend
    (RAY_REASON, "InjectedFault: client 1 crashed in round 1 (injected fault)"),  # pid, actor id and address left out
    ("<class 'fedcl.federation.faults.InjectedFault'>:<'client 1 crashed'>", "InjectedFault: client 1 crashed"),  # a SuperNode
    ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. Message: out of memory'>",
     "out of memory"),
    ("\x1b[31mred\x1b[0m\ttext\x07\u202e\x9b", "red text"),  # terminal escapes, control and bidi characters
    (INLINE_CHAINED, "RuntimeError: bad"),  # the exception raised, not its cause (Ray's traceback prints the cause first)
    ("<class 'ValueError'>:<'shapes differ\nExpected: (3, 4)'>", "ValueError: shapes differ Expected: (3, 4)"),
    ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run() (pid=1, actor_id=ab)\n  File \"a.py\", "
     "line 1\n    assert x\nAssertionError\n\nThe above exception was the direct cause of the following exception:\n\n"
     "flwr.clientapp.client_app.ClientAppException: \nException ClientAppException occurred. Message: '>", "AssertionError"),
    ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. Message: '>", "ClientAppException"),
    ("x" * 100_000, "x" * 299 + "…"),
    ("", "no reason given"),
])
def test_a_client_error_is_one_short_line_naming_the_clients_exception(reason, expected):
    assert client_error(reason) == expected
