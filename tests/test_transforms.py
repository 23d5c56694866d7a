import pytest
import torch

from fedcl.errors import ConfigError
from fedcl.transforms import PerTaskTransform, create_transform, transform_names

S = 32
EXPECTED_PARAMS = {
    "none": 0,
    "additive": 3 * S * S,
    "border": 3 * (2 * 4 * S + 2 * 4 * (S - 8)),
    "color": 9 + 3,
    "residual_conv": (3 * 8 * 9 + 8) + (8 * 3 * 9 + 3),
    "spatial": 6,
}


def test_every_registered_transform_is_checked():
    assert set(transform_names()) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_identity_at_start_and_parameter_count(name):
    t = create_transform(name, S)
    x = torch.rand(4, 3, S, S)
    assert torch.allclose(t(x), x, atol=1e-5)
    assert t.num_parameters() == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", [n for n in sorted(EXPECTED_PARAMS) if n != "none"])
def test_gradients_reach_only_the_transform_through_the_frozen_backbone(name, lite0):
    t = create_transform(name, S)
    with torch.no_grad():  # move away from the identity so every parameter has a gradient path
        for p in t.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.rand(2, 3, S, S)
    lite0(t(x)).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in t.parameters())
    assert all(p.grad is None for p in lite0.parameters())


def test_per_task_transform_routes_each_sample_to_its_task():
    t = create_transform("color", S, per_task=True, num_tasks=3)
    assert isinstance(t, PerTaskTransform) and t.num_parameters() == 3 * 12
    with torch.no_grad():
        t.for_task(1).bias.fill_(0.5)
    x = torch.rand(4, 3, S, S)
    y = t(x, torch.tensor([0, 1, 2, 1]))
    assert torch.allclose(y[[0, 2]], x[[0, 2]], atol=1e-6)
    assert torch.allclose(y[[1, 3]], x[[1, 3]] + 0.5, atol=1e-6)
    with pytest.raises(ValueError):
        t(x)


def test_border_prompt_touches_only_the_frame():
    t = create_transform("border", S, width=3)
    with torch.no_grad():
        for p in t.parameters():
            p.fill_(1.0)
    x = torch.zeros(1, 3, S, S)
    y = t(x)
    assert y[..., 3:-3, 3:-3].abs().sum() == 0
    assert (y[..., :3, :] == 1).all() and (y[..., :, -3:] == 1).all()


def test_bad_transform_options_name_the_transform():
    with pytest.raises(ConfigError, match="border"):
        create_transform("border", 16, width=9)
    with pytest.raises(ConfigError, match="residual_conv"):
        create_transform("residual_conv", 16, nonsense=1)
