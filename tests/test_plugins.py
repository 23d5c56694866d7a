"""Continual-learning plugins (EWC, LwF, replay, joint) on the one training loop, single device."""


import pytest
import torch

from fedcl.methods import Batch, create_plugin
from fedcl.methods.replay import SAMPLE_OVERHEAD_BYTES
from helpers import tiny_learner

TINY = ["data.num_tasks=3", "data.max_train_per_class=16", "data.max_test_per_class=8", "data.image_size=32",
        "train.epochs=1", "train.batch_size=16"]


def setup(lite0, *overrides):
    return tiny_learner(lite0, TINY, *overrides)[1:]


def plugin(learner, name):
    return next(p for p in learner.plugins if p.name == name)


def first_batch_penalty(learner, experience, p):
    """The plugin's penalty on the experience's first batch, with the current parameters."""
    inputs, labels, ids, are_features = next(learner.batches(experience, 16, shuffle=False))
    features = inputs if are_features else learner.model.encode(inputs, ids)
    logits = learner.model.head(features, ids)
    return p.penalty(learner, Batch(inputs, labels, ids, features, logits, are_features))


def test_ewc_penalty_is_zero_on_the_first_task_and_positive_after(lite0):
    benchmark, model, learner = setup(lite0, "method.plugins.ewc.strength=1000.0", "method.plugins.ewc.fisher_samples=4")
    ewc = plugin(learner, "ewc")
    first, second = benchmark.train_stream[:2]
    learner.train_experience(first)
    assert ewc.fisher == {}  # nothing consolidated during the first task
    assert first_batch_penalty(learner, first, ewc) is None
    # Fisher is estimated on the trained parameters only (transform + head), never the backbone
    assert set(ewc.pending) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(not n.startswith("backbone.") for n in ewc.pending)
    assert all((f >= 0).all() for f in ewc.pending.values()) and any(f.sum() > 0 for f in ewc.pending.values())
    learner.train_experience(second)
    assert set(ewc.fisher) == set(ewc.pending)
    assert first_batch_penalty(learner, second, ewc).item() > 0  # the parameters moved away from the anchor


def test_ewc_state_round_trips(lite0):
    benchmark, _, learner = setup(lite0, "method.plugins.ewc.fisher_samples=4")
    for e in benchmark.train_stream[:2]:
        learner.train_experience(e)
    ewc = plugin(learner, "ewc")
    clone = create_plugin("ewc")
    clone.load_state_dict(ewc.state_dict())
    assert clone.boundary.last_task == ewc.boundary.last_task
    for a, b in ((clone.fisher, ewc.fisher), (clone.anchor, ewc.anchor), (clone.pending, ewc.pending)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lwf_distils_only_after_the_first_task_and_starts_from_zero(lite0):
    benchmark, model, learner = setup(lite0, "method.plugins.lwf.alpha=1.0")
    lwf = plugin(learner, "lwf")
    first, second = benchmark.train_stream[:2]
    learner.train_experience(first)
    assert first_batch_penalty(learner, first, lwf) is None
    learner.begin_task(second)
    lwf.before_experience(learner, second)
    assert lwf.old_tasks == [0]
    # at the task change the old model is the current one: nothing to distil yet
    assert first_batch_penalty(learner, second, lwf).item() == pytest.approx(0.0, abs=1e-6)
    backbone_before = model.backbone.fingerprint()
    learner.train_experience(second)
    assert first_batch_penalty(learner, second, lwf).item() > 1e-4
    assert lwf.old_model(learner).backbone is model.backbone  # frozen backbone shared, not copied
    assert model.backbone.fingerprint() == backbone_before


@pytest.mark.parametrize("budget", ["buffer_size=10", "buffer_bytes=20000"])
def test_replay_buffer_keeps_its_budget_and_replays_only_past_tasks(lite0, budget):
    benchmark, _, learner = setup(lite0, f"method.plugins.replay.{budget}")
    replay = plugin(learner, "replay")
    replayed_tasks = []
    original = replay.replay_batch

    def spy(learner_, n):
        out = original(learner_, n)
        if out is not None:
            replayed_tasks.append((learner_.current_task, set(out[2].tolist())))
        return out

    replay.replay_batch = spy
    all_images = torch.cat([e.data.images for e in benchmark.train_stream]).flatten(1)
    for e in benchmark.train_stream:
        learner.train_experience(e)
        capacity = replay.capacity(tuple(e.data.images.shape[1:]))
        assert len(replay) <= capacity
        if "bytes" in budget:
            # Fashion-MNIST is stored as 28 x 28 grey bytes: 25 samples of 784 + 16 bytes fit 20,000 bytes
            assert e.data.images[0].numel() * e.data.images.element_size() == 28 * 28
            assert capacity == 20000 // (28 * 28 + SAMPLE_OVERHEAD_BYTES) == 25
            assert replay.nbytes() <= 20000
        # every stored image is one of this learner's training images, with its true label
        for img, label in zip(replay.images.flatten(1), replay.labels):
            match = (all_images == img).all(1).nonzero().flatten()
            assert len(match) >= 1
    assert replayed_tasks and all(current not in tasks for current, tasks in replayed_tasks)
    assert all(tasks <= {0, 1} for _, tasks in replayed_tasks)
    # balanced over the three tasks' classes
    counts = torch.bincount(replay.labels).tolist()
    assert max(c for c in counts if c) - min(c for c in counts if c) <= 1


def test_replay_makes_replayed_classes_part_of_the_loss(lite0):
    benchmark, _, learner = setup(lite0, "method.plugins.replay.buffer_size=12")
    learner.train_experience(benchmark.train_stream[0])
    second = benchmark.train_stream[1]
    learner.begin_task(second)
    plugin(learner, "replay").before_experience(learner, second)
    mask = learner.train_mask(second)
    assert set(mask.nonzero().flatten().tolist()) == set(second.classes) | set(benchmark.train_stream[0].classes)


def test_joint_trains_one_experience_with_every_task(lite0):
    benchmark, model, learner = setup(lite0, "method.plugins.joint={}")
    stream = learner.stream(benchmark.train_stream)
    assert len(stream) == 1 and len(stream[0]) == sum(len(e) for e in benchmark.train_stream)
    assert stream[0].tasks == [0, 1, 2]
    matrix, _ = learner.fit(benchmark)
    assert matrix.shape == (1, 3)
    assert sorted(model.seen_tasks) == [0, 1, 2]
    assert matrix[0].mean() > 1 / 6 + 0.1  # above chance over 6 classes
