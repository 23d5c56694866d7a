"""The server strategy on hand-made client replies (real Flower Messages, no network)."""

import pytest
import torch
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedcl.config import build_config
from fedcl.federation.accounting import message_bytes
from fedcl.federation.codec import encode
from fedcl.federation.flower_adapter import get_all_nested_objects, set_source, task_identity
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.strategy import FedCLStrategy


@pytest.fixture(autouse=True)
def identity():
    """Flower stamps messages with the run's identity; give this process one."""
    with task_identity(1, 0, 1):
        yield


class FakeGrid:
    """Nodes that answer the server's partition-id query with their index in ``nodes``."""

    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes

    def send_and_receive(self, messages, timeout=None):
        out = []
        for m in messages:
            assert m.metadata.message_type == "query"
            answer = Message(content=RecordDict({"metrics": MetricRecord({"partition-id": self.nodes.index(m.metadata.dst_node_id)})}), reply_to=m)
            set_source(answer, m.metadata.dst_node_id)
            out.append(answer)
        return out


def configure(s, nodes, server_round=1):
    """Discover ``nodes`` (partition id = index) and configure a training round for them."""
    grid = FakeGrid(nodes)
    s.discover(grid, timeout=1)
    return s.train_messages(server_round, ConfigRecord(), grid)


def strategy(**overrides):
    cfg = build_config("fedsmoke", None, [f"{k}={v}" for k, v in overrides.items()], schema=FedRunConfig)
    g = {"head.fc.weight": torch.zeros(4, 3), "head.fc.bias": torch.zeros(4), "transform.delta": torch.zeros(5)}
    kinds = {"head.fc.weight": "class_rows", "head.fc.bias": "class_rows", "transform.delta": "examples"}
    return FedCLStrategy(cfg, g, kinds, full_model_array_bytes=10_000, backbone_crc=123)


def reply(to, pid, value, counts, crc=123, state=None):
    state = state or {"head.fc.weight": torch.full((4, 3), value), "head.fc.bias": torch.full((4,), value), "transform.delta": torch.full((5,), value)}
    metrics = MetricRecord({"partition-id": pid, "task": 0, "num-examples": sum(counts), "train-time-s": 1.0, "loss": 0.5,
                            "class-counts": counts, "task-examples": [sum(counts), 0], "backbone-crc": crc})
    return Message(content=RecordDict({"arrays": encode(state), "metrics": metrics}), reply_to=to)


def test_round_aggregates_by_hand_counts_bytes_and_rejects_bad_updates():
    s = strategy()
    sent = configure(s, [101, 102, 103, 104])
    assert {m.metadata.dst_node_id for m in sent} == {101, 102, 103, 104}
    assert set(sent[0].content.array_records["arrays"].keys()) == {"head.fc.weight", "head.fc.bias", "transform.delta"}
    by_node = {m.metadata.dst_node_id: m for m in sent}
    replies = [
        reply(by_node[101], 0, 1.0, [3, 1, 0, 0]),
        reply(by_node[102], 1, 5.0, [1, 0, 4, 0]),
        reply(by_node[103], 2, 9.0, [5, 5, 0, 0], crc=999),  # another backbone: rejected
        reply(by_node[104], 3, 7.0, [2, 0, 0, 0], state={"head.fc.weight": torch.zeros(2, 2)}),  # malformed: rejected
    ]
    metrics = s.aggregate_train(1, replies)
    w = s.global_state
    # class 0: clients 0 and 1 with 3 and 1 examples -> (3*1 + 1*5) / 4 = 2; class 1 only client 0; class 2 only client 1
    assert torch.allclose(w["head.fc.bias"], torch.tensor([2.0, 1.0, 5.0, 0.0]))
    assert torch.allclose(w["transform.delta"], torch.full((5,), (4 * 1.0 + 5 * 5.0) / 9))
    rejected = s.recorder.rejected
    assert metrics["clients-trained"] == 2 and metrics["num-examples"] == 9
    assert len(rejected) == 2 and "fingerprint mismatch" in rejected[0] and "client 3" in rejected[1] and "keys do not match" in rejected[1]
    # every message counted at its exact serialized size, per client
    for node, pid in ((101, 0), (102, 1), (103, 2), (104, 3)):
        assert s.recorder.ledger.down[1][pid] == message_bytes(by_node[node])
    assert s.recorder.ledger.up[1][0] == message_bytes(replies[0])
    assert s.recorder.ledger.total("up") == sum(message_bytes(r) for r in replies)


def test_message_size_is_the_sum_of_deflated_objects_and_close_to_the_payload():
    s = strategy()
    msg = configure(s, [7])[0]
    objects = get_all_nested_objects(msg)
    wire = sum(len(o.deflate()) for o in objects.values())
    # the message's metadata is counted with its run, node and task ids at their widest varint (10 bytes each)
    assert wire <= message_bytes(msg) <= wire + 5 * 11
    payload = 4 * (12 + 4 + 5)
    assert payload < message_bytes(msg) < payload + 3000


def test_byte_counts_and_wire_copies_hash_each_object_once(monkeypatch):
    """Counting a message's bytes and the inline grid's wire copy compute each object id (SHA-256 of its
    serialised bytes) at most once, not once per ancestor; the count is the one of hashing afresh everywhere."""
    import flwr.supercore.inflatable.inflatable_object as inflatable

    from fedcl.federation import flower_adapter
    from fedcl.federation.flower_adapter import _message_object_bytes, over_the_wire

    s = strategy()
    msg = configure(s, [7])[0]
    objects = get_all_nested_objects(msg)
    fresh = sum(_message_object_bytes(o) if isinstance(o, Message) else len(o.deflate()) for o in objects.values())
    hashed, get_object_id = [0], inflatable.get_object_id

    def counted(content):
        hashed[0] += 1
        return get_object_id(content)

    monkeypatch.setattr(inflatable, "get_object_id", counted)
    monkeypatch.setattr(flower_adapter, "get_object_id", counted)
    assert message_bytes(msg) == fresh
    assert hashed[0] <= len(objects), (hashed, len(objects))
    hashed[0] = 0
    received = over_the_wire(msg)
    assert hashed[0] <= len(objects), (hashed, len(objects))
    assert message_bytes(received) == fresh
    assert received.content["config"] == msg.content["config"]


def test_quantised_downlink_is_smaller():
    sizes = {}
    for q in ("none", "fp16", "int8"):
        s = strategy(**{"federation.quantization": q})
        s.global_state = {k: torch.randn_like(v) for k, v in s.global_state.items()}
        s.global_state["transform.delta"] = torch.randn(20000)
        sizes[q] = message_bytes(configure(s, [7])[0])
    assert sizes["int8"] < 0.3 * sizes["none"] and sizes["fp16"] < 0.55 * sizes["none"]


def test_fedadam_server_step_replaces_plain_averaging():
    s = strategy(**{"federation.strategy": "fedadam", "federation.server_lr": 0.5})
    sent = configure(s, [1, 2, 3])
    s.aggregate_train(1, [reply(sent[0], 0, 1.0, [1, 1, 1, 1])])
    # plain averaging would jump to 1.0; Adam's first step moves by ~lr in the direction of the average
    assert torch.allclose(s.global_state["transform.delta"], torch.full((5,), 0.5), atol=1e-3)


def _honest_and_malicious(s, malicious_state):
    sent = configure(s, [1, 2, 3, 4, 5])
    replies = [reply(sent[i], i, 1.0 + 0.1 * i, [2, 2, 2, 2]) for i in range(4)]
    replies.append(reply(sent[4], 4, 0.0, [2, 2, 2, 2], state=malicious_state))
    return replies


@pytest.mark.parametrize("method", ["median", "trimmed_mean", "krum"])
def test_robust_aggregation_ignores_one_huge_update(method):
    s = strategy(**{"federation.aggregation": method})
    huge = {"head.fc.weight": torch.full((4, 3), 1e6), "head.fc.bias": torch.full((4,), 1e6), "transform.delta": torch.full((5,), 1e6)}
    s.aggregate_train(1, _honest_and_malicious(s, huge))
    assert s.recorder.rejected == []  # accepted, but outvoted
    assert all(float(v.abs().max()) < 2.0 for v in s.global_state.values())
    weighted = strategy()
    weighted.aggregate_train(1, _honest_and_malicious(weighted, huge))
    assert float(weighted.global_state["transform.delta"].max()) > 1e5  # plain averaging is dragged away


def test_norm_bound_refuses_large_updates_and_names_the_client():
    s = strategy(**{"federation.max_update_norm": 10.0})
    huge = {"head.fc.weight": torch.full((4, 3), 50.0), "head.fc.bias": torch.zeros(4), "transform.delta": torch.zeros(5)}
    s.aggregate_train(1, _honest_and_malicious(s, huge))
    assert len(s.recorder.rejected) == 1 and "client 4" in s.recorder.rejected[0] and "exceeds federation.max_update_norm=10" in s.recorder.rejected[0]
    assert float(s.global_state["head.fc.weight"].max()) < 2.0


@pytest.mark.parametrize("bad, reason", [
    ({"head.fc.weight": torch.full((4, 3), float("nan"))}, "NaN or infinite"),
    ({"head.fc.weight": torch.full((4, 3), float("inf"))}, "NaN or infinite"),
    ({"head.fc.weight": torch.zeros(3, 4)}, "has shape (3, 4)"),
    ({"head.fc.weight": torch.zeros(4, 3, dtype=torch.float64)}, "has dtype float64, the model expects float32"),
    ({"head.fc.weight": torch.zeros(4, 3, dtype=torch.int64)}, "has dtype int64"),
    ({"backbone.model.conv_stem.weight": torch.zeros(3)}, "unexpected ['backbone.model.conv_stem.weight']"),
])
def test_malformed_updates_are_refused_with_the_reason(bad, reason):
    s = strategy()
    good = {"head.fc.weight": torch.ones(4, 3), "head.fc.bias": torch.ones(4), "transform.delta": torch.ones(5)}
    sent = configure(s, [1, 2])
    s.aggregate_train(1, [reply(sent[0], 0, 1.0, [1, 1, 1, 1]), reply(sent[1], 1, 0.0, [1, 1, 1, 1], state={**good, **bad})])
    assert len(s.recorder.rejected) == 1 and reason in s.recorder.rejected[0], s.recorder.rejected
    assert all(torch.isfinite(v).all() for v in s.global_state.values())
    assert torch.allclose(s.global_state["transform.delta"], torch.ones(5))  # only the good client counted


def test_a_wire_copy_is_counted_from_the_bytes_it_arrived_as(monkeypatch):
    """The inline grid's wire copy serialises each object once, and counting the received message reuses those
    bytes (only its metadata is serialised again): the same count as serialising it afresh, ids changed or not."""
    from fedcl.federation.flower_adapter import _message_object_bytes, new_message_id, over_the_wire

    def fresh(m):
        return sum(_message_object_bytes(o) if isinstance(o, Message) else len(o.deflate()) for o in get_all_nested_objects(m).values())

    msg = configure(strategy(), [7])[0]
    expected = fresh(msg)
    deflated, deflate = [0], ConfigRecord.deflate

    def counted(self):
        deflated[0] += 1
        return deflate(self)

    monkeypatch.setattr(ConfigRecord, "deflate", counted)
    received = over_the_wire(msg)
    assert deflated[0] == 1
    new_message_id(received)
    set_source(received, 12345)
    assert message_bytes(received) == expected == fresh(received)
    deflated[0] = 0
    assert message_bytes(received) == expected
    assert deflated[0] == 0
