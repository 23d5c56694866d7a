"""Statistical heads (NCM, LDA, ridge): fitted from accumulated or federated sums, they equal the joint fit."""

import numpy as np
import pytest
import torch

from fedcl.federation.aggregation import ClientUpdate, aggregate
from fedcl.heads import create_head
from helpers import tiny_learner

K, D = 6, 12
HEADS = [("ncm", {}), ("ncm", {"metric": "cosine"}), ("lda", {}), ("ridge", {}), ("ridge", {"projection_dim": 40})]
IDS = ["ncm", "ncm-cosine", "lda", "ridge", "ridge-ranpac"]
BASE = ["method.name=head_only"]


def class_data(seed: int = 0, per_class: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, D, generator=g) * 3
    y = torch.arange(K).repeat_interleave(per_class)
    noise = torch.randn(len(y), D, generator=g) @ torch.randn(D, D, generator=g) * 0.4  # correlated, anisotropic
    x = centres[y] + noise + 5  # offset: an intercept matters
    return x, y


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def fitted(name: str, options: dict, parts) -> torch.nn.Module:
    head = create_head(name, D, K, **options)
    for x, y in parts:
        head.observe(x, y)
    return head


@pytest.mark.parametrize(("name", "options"), HEADS, ids=IDS)
def test_class_incremental_stream_equals_joint_fit(name, options):
    x, y = class_data()
    joint = fitted(name, options, [(x, y)])
    # tasks of 2 classes, each in shuffled batches of 7
    stream = []
    for task in range(K // 2):
        idx = ((y == 2 * task) | (y == 2 * task + 1)).nonzero(as_tuple=True)[0]
        idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(task))]
        stream += [(x[b], y[b]) for b in idx.split(7)]
    incremental = fitted(name, options, stream)
    test = torch.randn(50, D) * 3 + 5
    assert rel_diff(incremental(test), joint(test)) <= 1e-6
    assert (joint(x).argmax(1) == y).float().mean() > 0.9


@pytest.mark.parametrize(("name", "options"), HEADS, ids=IDS)
def test_sums_aggregated_over_three_clients_equal_the_central_fit(name, options):
    x, y = class_data(1)
    central = fitted(name, options, [(x, y)])
    global_head = fitted(name, options, [(x[:10], y[:10])])  # the server already holds some statistics
    rest = torch.arange(10, len(y))
    shards = [rest[y[rest] < 2], rest[(y[rest] >= 2) & (y[rest] < 5)], rest[y[rest] >= 5]]  # label skew
    updates = []
    for shard in shards:
        client = create_head(name, D, K, **options)
        client.load_state_dict(global_head.state_dict())
        client.observe(x[shard], y[shard])
        updates.append(ClientUpdate(client.state_dict(), len(shard), [], []))
    global_head.load_state_dict(aggregate(global_head.state_dict(), updates, global_head.aggregation_kinds()))
    test = torch.randn(50, D) * 3 + 5
    assert set(global_head.aggregation_kinds().values()) == {"sum"}
    assert rel_diff(global_head(test), central(test)) <= 1e-6


def test_gram_is_sent_as_its_packed_upper_triangle():
    head = fitted("lda", {}, [class_data()])
    x, _ = class_data()
    assert head.gram.shape == (D * (D + 1) // 2,)
    assert torch.allclose(head.gram_matrix(), x.double().T @ x.double())


def test_ranpac_projection_comes_from_the_seed_and_is_never_exchanged(lite0):
    a, b = (create_head("ridge", D, K, projection_dim=40, projection_seed=3) for _ in range(2))
    other = create_head("ridge", D, K, projection_dim=40, projection_seed=4)
    assert torch.equal(a.projection, b.projection) and not torch.equal(a.projection, other.projection)
    _, _, model, _ = tiny_learner(lite0, BASE, "model.head.name=ridge", "model.head.options.projection_dim=64")
    exchanged = model.exchanged_state()
    assert {k for k in exchanged if k.startswith("head.")} == {"head.counts", "head.sums", "head.gram"}
    assert exchanged["head.gram"].numel() == 64 * 65 // 2


def test_regularization_and_shrinkage_rules_are_deterministic_and_follow_the_data():
    x, y = class_data(2)
    ridge = [fitted("ridge", {}, [(x, y)]) for _ in range(2)]
    assert ridge[0].chosen_regularization() == ridge[1].chosen_regularization()
    noisy = fitted("ridge", {}, [(x + torch.randn_like(x) * 4, y)])
    assert noisy.chosen_regularization() > ridge[0].chosen_regularization()
    lda = fitted("lda", {}, [(x, y)])
    assert lda.chosen_shrinkage() == fitted("lda", {}, [(x, y)]).chosen_shrinkage()
    # OAS from the summed moments equals scikit-learn's OAS on the class-centred samples
    from sklearn.covariance import oas

    x = x.double()
    means = torch.stack([x[y == c].mean(0) for c in range(K)])
    _, expected = oas((x - means[y]).numpy(), assume_centered=True)
    assert lda.chosen_shrinkage() == pytest.approx(expected, rel=1e-6)
    assert 0 < lda.chosen_shrinkage() < 1


def test_fixed_regularization_is_sklearn_ridge():
    from sklearn.linear_model import Ridge

    x, y = class_data(3)
    head = fitted("ridge", {"regularization": 2.5}, [(x, y)])
    expected = Ridge(alpha=2.5).fit(x.numpy(), np.eye(K)[y.numpy()]).predict(x.numpy())
    assert rel_diff(head(x).double(), torch.from_numpy(expected)) <= 1e-5


def test_epochs_and_repeated_rounds_count_each_sample_once(lite0):
    _, benchmark, model, learner = tiny_learner(lite0, BASE, "model.head.name=lda", "train.epochs=2")
    first = benchmark.train_stream[0]
    learner.train_experience(first)
    assert int(model.head.counts.sum()) == len(first)
    state = {k: v.clone() for k, v in model.head.state_dict().items()}
    # the next round of the same task: a fresh learner with the global head and the client's plugin state
    _, _, model2, learner2 = tiny_learner(lite0, BASE, "model.head.name=lda", "train.epochs=2")
    model2.head.load_state_dict(state)
    learner2.gathered.load_state_dict(learner.gathered.state_dict())
    learner2.train_experience(first)
    assert all(torch.equal(v, model2.head.state_dict()[k]) for k, v in state.items())
    learner2.train_experience(benchmark.train_stream[1])
    assert int(model2.head.counts.sum()) == len(first) + len(benchmark.train_stream[1])


def test_first_session_adaptation_builds_the_head_with_the_final_transform(lite0):
    _, benchmark, model, learner = tiny_learner(lite0, [], "method.name=input_tuning", "model.head.name=ncm",
                                                "method.options.adapt_tasks=1", "train.epochs=1")
    before = model.transform.state_dict()["delta"].clone() if "delta" in model.transform.state_dict() else None
    learner.train_experience(benchmark.train_stream[0])
    assert model.head.__class__.__name__ == "LinearHead"  # a temporary head trains with the transform
    adapted = {k: v.clone() for k, v in model.transform.state_dict().items()}
    assert before is None or not torch.equal(before, adapted["delta"])
    for experience in benchmark.train_stream[1:]:
        learner.train_experience(experience)
    assert all(torch.equal(v, model.transform.state_dict()[k]) for k, v in adapted.items())  # frozen after task 0
    assert int(model.head.counts.sum()) == sum(len(e) for e in benchmark.train_stream)
    # every statistic was computed with the final transform
    reference = create_head("ncm", model.head.feature_dim, model.head.num_classes)
    with torch.no_grad():
        for experience in benchmark.train_stream:
            reference.observe(model.encode(learner_inputs(learner, experience)), experience.data.labels)
    assert rel_diff(model.head.sums, reference.sums) <= 1e-5


def learner_inputs(learner, experience):
    from fedcl.data.preprocessing import to_model_input

    return to_model_input(experience.data.images, learner.image_size, learner.device)


@pytest.mark.parametrize(("name", "options"), HEADS, ids=IDS)
def test_the_classifier_is_solved_again_only_when_the_sums_change(name, options, monkeypatch):
    """A federated round loads the global state into new buffers: the same sums reuse the solution, new ones do not."""
    x, y = class_data()
    head = fitted(name, options, [(x, y)])
    solves = []
    monkeypatch.setattr(type(head), "solve", lambda self, real=type(head).solve: (solves.append(1), real(self))[1])
    first = head.classifier()
    head.load_state_dict({k: v.clone() for k, v in head.state_dict().items()})  # the same values, new tensors
    assert head.classifier() is first and len(solves) == 1
    state = head.state_dict()
    state["counts"] = state["counts"].clone()
    state["counts"][0] += 1  # one more sample counted: another classifier
    head.load_state_dict(state)
    assert head.classifier() is not first and len(solves) == 2
    head.observe(x[:2], y[:2])  # sums written in place
    assert len(solves) == 2 and head.classifier() is not first and len(solves) == 3
