"""The one training loop with each core method plugin, on a tiny real stream."""

import copy
import math

import numpy as np
import pytest
import torch

from fedcl.data.preprocessing import to_model_input
from helpers import tiny_learner

TINY = ["data.num_tasks=2", "data.max_train_per_class=16", "data.max_test_per_class=8", "data.image_size=32",
        "train.epochs=1", "train.batch_size=16"]


def setup(lite0, *overrides, machine=True):
    return tiny_learner(lite0, TINY, *overrides, machine=machine)


def backbone_state(model):
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


def changed(before, model):
    after = model.backbone.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("transform", ["additive", "border", "color", "residual_conv", "spatial"])
def test_input_tuning_leaves_backbone_bit_identical(lite0, transform):
    _, benchmark, model, learner = setup(lite0, f"model.transform.name={transform}")
    before = backbone_state(model)
    transform_before = copy.deepcopy(model.transform.state_dict())
    head_before = copy.deepcopy(model.head.state_dict())
    matrix, _ = learner.fit(benchmark)
    assert changed(before, model) == set()  # weights and BatchNorm buffers untouched
    assert any(not torch.equal(v, model.transform.state_dict()[k]) for k, v in transform_before.items())
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())
    assert matrix.shape == (2, 2)


def test_head_only_caches_features_and_trains_only_the_head(lite0):
    _, benchmark, model, learner = setup(lite0, "method.name=head_only")
    calls = {"n": 0}
    model.backbone.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    before = backbone_state(model)
    matrix, _ = learner.fit(benchmark)
    assert changed(before, model) == set()
    assert model.transform.num_parameters() == 0
    # each experience is encoded once (train: 2 x 32 samples, test: 2 x 16), whatever the epochs and evaluations
    assert calls["n"] == 4
    assert matrix[0, 0] > 0.5  # the head learned the first task


def test_full_finetuning_moves_every_stage(lite0):
    _, benchmark, model, learner = setup(lite0, "method.name=finetune", "train.backbone_lr=0.001")
    before = backbone_state(model)
    learner.train_experience(benchmark.train_stream[0])
    moved = changed(before, model)
    assert any(k.startswith("model.conv_stem") for k in moved) and any(k.startswith("model.conv_head") for k in moved)


def test_partial_finetuning_moves_only_the_last_stage(lite0):
    _, benchmark, model, learner = setup(lite0, "method.name=partial_finetune", "method.options.stages=1", "train.backbone_lr=0.001")
    before = backbone_state(model)
    learner.train_experience(benchmark.train_stream[0])
    moved = changed(before, model)
    assert moved and all(k.startswith(("model.blocks.6", "model.conv_head", "model.bn2")) for k in moved)
    assert not any(k.startswith("model.blocks.5") for k in moved)


def test_current_task_mask_leaves_unseen_class_rows_untouched(lite0):
    _, benchmark, model, learner = setup(lite0, "method.name=head_only", "train.logit_mask=current")
    weight_before = model.head.fc.weight.detach().clone()
    learner.train_experience(benchmark.train_stream[0])
    first = benchmark.task_classes[0]
    others = [c for c in range(10) if c not in first]
    assert torch.equal(model.head.fc.weight[others], weight_before[others])
    assert not torch.equal(model.head.fc.weight[first], weight_before[first])


def test_task_incremental_with_per_task_transform_and_multi_head(lite0):
    _, benchmark, model, learner = setup(lite0, "data.scenario=task_incremental", "model.head.name=multi_head",
                                         "model.transform.name=color", "model.transform.per_task=true")
    t0_before = copy.deepcopy(model.transform.for_task(0).state_dict())
    t1_before = copy.deepcopy(model.transform.for_task(1).state_dict())
    learner.train_experience(benchmark.train_stream[0])
    assert any(not torch.equal(v, model.transform.for_task(0).state_dict()[k]) for k, v in t0_before.items())
    assert all(torch.equal(v, model.transform.for_task(1).state_dict()[k]) for k, v in t1_before.items())
    acc = learner.evaluate(benchmark.test_stream)
    assert acc[0] > 0.5


def test_per_task_transform_infers_task_in_class_incremental(lite0):
    _, benchmark, model, learner = setup(lite0, "model.transform.name=color", "model.transform.per_task=true")
    matrix, _ = learner.fit(benchmark)
    assert np.isfinite(matrix).all() and matrix[-1].mean() > 0.25


def test_ncm_head_learns_without_gradient(lite0):
    _, benchmark, model, learner = setup(lite0, "method.name=head_only", "model.head.name=ncm")
    matrix, _ = learner.fit(benchmark)
    assert matrix[-1].mean() > 0.5  # 4 classes, chance 0.25
    assert model.head.counts.sum() == 64


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_train_without_touching_the_backbone(lite0, precision):
    # real runs refuse autocast on a CPU (much slower than fp32); the code path is tested here all the same
    _, benchmark, model, learner = setup(lite0, f"train.precision={precision}", "train.channels_last=true", machine=False)
    assert learner.plan.precision == precision and learner.plan.channels_last
    assert (learner.plan.grad_scaler() is not None) == (precision == "fp16")
    before = backbone_state(model)
    head_before = copy.deepcopy(model.head.state_dict())
    stats = learner.train_experience(benchmark.train_stream[0])
    assert np.isfinite(stats["loss"])
    assert changed(before, model) == set()
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items())
    accuracy = learner.evaluate_experience(benchmark.test_stream[0])
    assert accuracy > 0.5 + 0.15  # two classes: chance is 0.5


def test_auto_precision_is_fp32_on_cpu():
    from fedcl.precision import plan_execution

    plan = plan_execution(torch.device("cpu"))
    assert plan.precision == "fp32" and not plan.channels_last


def test_a_client_learner_on_the_shared_backbone_walks_only_transform_and_head(monkeypatch):
    """Every simulated client's learner wraps its worker's shared frozen backbone: after the first learner placed
    it, placing a model on the device and switching train/eval modes walk only the transform and head (the
    backbone's hundreds of modules cost ~10 ms per client), and the frozen backbone stays in eval mode."""
    from fedcl.builder import benchmark_for, build_learner, build_model
    from fedcl.config import build_config
    from fedcl.federation.settings import FedRunConfig

    cfg = build_config("fedsmoke", None, ["method.name=head_only", "model.head.name=ridge"], schema=FedRunConfig)
    benchmark = benchmark_for(cfg)
    build_learner(cfg, *build_model(cfg, benchmark), benchmark, 0)  # the first client places the backbone
    calls = {"_apply": 0, "train": 0}
    for name in calls:
        original = getattr(torch.nn.Module, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, name, counted)
    model, method = build_model(cfg, benchmark)
    learner = build_learner(cfg, model, method, benchmark, 1)
    learner.model.train()
    learner.model.eval()
    monkeypatch.undo()
    modules = sum(1 for _ in model.backbone.modules())
    assert calls["_apply"] < 20 and calls["train"] < 20, (calls, modules)
    model.train()
    assert not any(m.training for m in model.backbone.modules())


def test_a_forward_only_backbone_is_channels_last_on_cpu_with_the_same_features(lite0):
    """Frozen features (no transform learned) run the backbone forward only: it is laid out channels-last on a
    CPU too (faster convolutions), with features equal to the contiguous layout's to float rounding; a learner
    that tunes the input keeps train.channels_last's CUDA-only default."""
    _, benchmark, model, learner = setup(lite0, "method.name=head_only", "model.head.name=ridge")
    assert learner.plan.channels_last
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    experience = benchmark.train_stream[0]
    with torch.no_grad():
        fast = learner.encode_images(experience.data.images[:8], experience.task_ids_of(torch.arange(8)))
        plain = copy.deepcopy(lite0)(to_model_input(experience.data.images[:8], 32, "cpu").contiguous())
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    assert not setup(lite0, "method.name=input_tuning")[3].plan.channels_last
    model.place("cpu", channels_last=False)  # a shared backbone's next learner may want the other layout
    assert conv.weight.is_contiguous()


def test_prefetched_features_are_charged_their_encoding_time(lite0):
    """A client whose features were prefetched (inline simulation) reports the encoding time they cost, so simulated
    device times still include the backbone; a learner without a prefetch does not use the per-sample store."""
    _, benchmark, model, learner = setup(lite0, "method.name=head_only", "model.head.name=ridge")
    experience = benchmark.train_stream[0]
    learner.gather_statistics(experience)
    assert len(learner.cache.samples) == 0  # no prefetch: encoded directly, nothing stored per sample
    _, benchmark, model, learner = setup(lite0, "method.name=head_only", "model.head.name=ridge")
    experience = benchmark.train_stream[0]
    assert learner.prefetch_features([experience]) == len(experience)
    learner.cache.samples.seconds_per_sample = 1.0  # as if each sample had taken a second to encode
    stats = learner.gather_statistics(experience)
    assert stats["num_examples"] == len(experience) and stats["train_time_s"] >= len(experience)


def test_sample_features_keep_their_hits_when_storing_the_misses_evicts_them():
    """A store with room for two rows: a hit that is the least recently used is read before the misses are
    stored (storing them evicts it), and every row is the right one."""
    from types import SimpleNamespace

    from fedcl.sample_features import SampleFeatures

    images = torch.arange(3 * 4, dtype=torch.uint8).view(3, 1, 2, 2)
    experience = SimpleNamespace(data=SimpleNamespace(images=images), domain=None,
                                 task_ids_of=lambda index: torch.zeros(len(index), dtype=torch.long))
    encoded = []

    def encode(batch, task_ids):
        encoded.append(len(batch))
        return batch.flatten(1).float()

    store = SampleFeatures(max_bytes=2 * 4 * 4)  # two rows of 4 float32
    store.features(experience, torch.tensor([0, 1]), encode)
    rows = store.features(experience, torch.tensor([0, 2]), encode)  # 0: the oldest hit; storing 2 must not lose it
    assert torch.equal(rows, images[[0, 2]].flatten(1).float())
    assert encoded == [2, 1] and store.hits == 1 and len(store) == 2


def test_a_tensor_store_counts_a_replaced_tensor_once():
    from fedcl.sample_features import TensorLRU

    store = TensorLRU(max_bytes=64)
    store.put(("a",), torch.zeros(4))  # 16 bytes
    store.put(("a",), torch.zeros(8))  # replaced by 32 bytes
    store.put(("b",), torch.zeros(8))
    assert store.nbytes == 64 and len(store) == 2  # both fit: the replaced 16 bytes are not counted
    store.put(("a",), torch.zeros(2))
    assert store.nbytes == 40 and ("b",) in store


def _trained_with_batch_sizes(lite0, *overrides):
    """Transform and head after one epoch on task 0 (32 samples, batches of 12), and the batch sizes the backbone's
    network saw (forward pre-hook)."""
    _, benchmark, model, learner = setup(lite0, "train.batch_size=12", "train.eval_batch_size=24", *overrides)
    sizes = []
    hook = model.backbone.model.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    try:
        learner.train_experience(benchmark.train_stream[0])
        learner.evaluate_experience(benchmark.test_stream[0])
    finally:
        hook.remove()
        model.backbone.pad_multiple = None  # the session's shared backbone
    return {k: v.clone() for k, v in model.state_of(model.lightweight_keys()).items()}, sizes


def test_padded_batches_train_the_same_model_with_one_batch_shape(lite0):
    """train.pad_batches (on by default on CUDA, where each new batch size cost seconds): a frozen backbone runs
    every batch at a multiple of min(batch_size, eval_batch_size) / 2 = 6, and the model learns exactly what it
    learns from uneven batches."""
    padded, padded_sizes = _trained_with_batch_sizes(lite0, "train.pad_batches=always")
    plain, plain_sizes = _trained_with_batch_sizes(lite0, "train.pad_batches=never")
    assert sorted(set(plain_sizes)) == [8, 12, 16]  # train: 12, 12, 8; test: 16
    assert sorted(set(padded_sizes)) == [12, 18]  # 8 -> 12 (not 18), 16 -> 18
    for key, value in plain.items():
        assert torch.allclose(padded[key], value, atol=1e-6, rtol=1e-5), key


def test_a_trained_backbone_is_never_padded(lite0):
    """Zero rows would enter the batch statistics of a backbone in train mode."""
    _, sizes = _trained_with_batch_sizes(lite0, "train.pad_batches=always", "method.name=finetune")
    assert 8 in sizes


@pytest.mark.parametrize("method", ["finetune", "partial_finetune"])
def test_fine_tuning_never_gives_batchnorm_a_batch_of_one(lite0, method):
    """32 samples in batches of 31: the last one joins the batch before (at 32 px the last feature map is 1x1, and
    BatchNorm in train mode raised on one sample); a client holding a single sample trains nothing."""
    _, benchmark, model, learner = setup(lite0, f"method.name={method}", "train.batch_size=31")
    stats = learner.train_experience(benchmark.train_stream[0])
    assert stats["num_examples"] == 32 and math.isfinite(stats["loss"])
    one = copy.copy(benchmark.train_stream[0])
    one.data = one.data.subset(torch.arange(1))
    assert learner.train_experience(one)["num_examples"] == 0


def test_fine_tuning_with_batches_of_one_is_refused():
    from fedcl.config import build_config
    from fedcl.errors import ConfigError

    with pytest.raises(ConfigError, match="batches of 2 or more"):
        build_config("smoke", None, ["method.name=finetune", "train.batch_size=1"])
