import pytest
import torch

from fedcl.errors import ConfigError
from fedcl.heads import create_head, head_names

TASKS = [[0, 1], [2, 3]]


def test_all_heads_registered():
    assert set(head_names()) == {"linear", "multi_head", "cosine", "ncm", "lda", "ridge"}


@pytest.mark.parametrize("name", ["linear", "cosine", "multi_head", "ncm", "lda", "ridge"])
def test_logit_shape(name):
    h = create_head(name, 16, 4, TASKS)
    f = torch.randn(5, 16)
    h.observe(f, torch.tensor([0, 1, 2, 3, 0]))
    assert h(f, torch.tensor([0, 0, 1, 1, 0])).shape == (5, 4)


def test_parameter_counts():
    assert create_head("linear", 16, 4, TASKS).num_parameters() == 16 * 4 + 4
    assert create_head("multi_head", 16, 4, TASKS).num_parameters() == 2 * (16 * 2 + 2)
    assert create_head("cosine", 16, 4, TASKS).num_parameters() == 16 * 4 + 1
    assert create_head("ncm", 16, 4, TASKS).num_parameters() == 0
    assert create_head("lda", 16, 4, TASKS).num_parameters() == 0
    assert create_head("ridge", 16, 4, TASKS, projection_dim=32).num_parameters() == 0


def test_multi_head_masks_other_tasks():
    h = create_head("multi_head", 8, 4, TASKS)
    logits = h(torch.randn(3, 8), torch.tensor([0, 1, 0]))
    assert torch.isinf(logits[0, 2:]).all() and torch.isfinite(logits[0, :2]).all()
    assert torch.isinf(logits[1, :2]).all() and torch.isfinite(logits[1, 2:]).all()
    with pytest.raises(ValueError):
        h(torch.randn(3, 8))


def test_cosine_logits_bounded_by_scale():
    h = create_head("cosine", 8, 4, TASKS, scale=5.0)
    assert h(torch.randn(10, 8) * 100).abs().max() <= 5.0 + 1e-4


def test_ncm_means_are_count_weighted_and_unseen_classes_excluded():
    h = create_head("ncm", 2, 3)
    h.observe(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([0, 0]))
    h.observe(torch.tensor([[0.0, 4.0]]), torch.tensor([1]))
    assert torch.allclose(h.means()[0], torch.tensor([2.0, 0.0]))
    assert torch.allclose(h.means()[1], torch.tensor([0.0, 4.0]))
    logits = h(torch.tensor([[2.0, 0.5], [0.1, 3.9]]))
    assert logits.argmax(1).tolist() == [0, 1]
    assert torch.isinf(logits[:, 2]).all()
    assert not any(p.requires_grad for p in h.parameters())


def test_unknown_head_option():
    with pytest.raises(ConfigError, match="cosine"):
        create_head("cosine", 8, 4, TASKS, temperature=2)


@pytest.mark.parametrize(("name", "options"), [("ncm", {"metric": "manhattan"}), ("lda", {"shrinkage": 1.5}), ("ridge", {"projection_dim": -1})])
def test_bad_statistical_head_options(name, options):
    with pytest.raises(ConfigError, match=name):
        create_head(name, 8, 4, TASKS, **options)


def test_ncm_cosine_compares_directions_euclidean_distances():
    prototypes, query = torch.tensor([[1.0, 0.0], [10.0, 10.0]]), torch.tensor([[0.5, 0.5]])
    heads = {metric: create_head("ncm", 2, 2, metric=metric) for metric in ("euclidean", "cosine")}
    for h in heads.values():
        h.observe(prototypes, torch.tensor([0, 1]))
    assert heads["euclidean"](query).argmax(1).tolist() == [0]
    assert heads["cosine"](query).argmax(1).tolist() == [1]


def test_statistical_classifier_is_cached_until_the_sums_change():
    h = create_head("lda", 4, 3)
    h.observe(torch.randn(20, 4), torch.randint(0, 2, (20,)))
    first = h.classifier()
    assert h.classifier() is first
    h.observe(torch.randn(5, 4), torch.full((5,), 2))
    assert h.classifier() is not first and h.classifier()[0].shape == (3, 4)
    h.load_state_dict({k: v.clone() for k, v in h.state_dict().items()})
    assert h.classifier() is not first
