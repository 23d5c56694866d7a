import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedcl.backbones import create_backbone
from fedcl.backbones.efficientnet_lite0 import imagenet_classifier, map_packaged_state
from fedcl.errors import ConfigError, DataError


def test_default_backbone_spec(lite0):
    spec = lite0.spec
    assert spec.name == "efficientnet_lite0" and spec.feature_dim == 1280 and spec.input_size == 224
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    assert lite0.num_parameters() == 3_371_008
    assert lite0(torch.rand(2, 3, 64, 64)).shape == (2, 1280)


def test_packaged_imagenet_weights_recognise_sample_photos():
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    model = imagenet_classifier()
    top5 = []
    for image in load_sample_images().images:  # china.jpg (a temple), flower.jpg (a daisy-like flower)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
        with torch.no_grad():
            logits = model((x - 0.5) / 0.5)
        top5.append({info.index_to_description(i) for i in logits.topk(5).indices[0].tolist()})
    assert top5[0] & {"palace", "bell cote, bell cot", "dome", "monastery", "boathouse", "church, church building"}, top5[0]
    assert "daisy" in top5[1], top5[1]


def test_backbone_is_frozen_and_stays_in_eval_mode(lite0):
    assert not any(p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    bn_before = {k: v.clone() for k, v in lite0.state_dict().items() if "running" in k}
    lite0(torch.rand(4, 3, 32, 32) * 5)
    assert all(torch.equal(v, lite0.state_dict()[k]) for k, v in bn_before.items())


def test_weight_mapping_fails_loudly_on_mismatch(tmp_path):
    import timm

    from fedcl.backbones.efficientnet_lite0 import packaged_weights_path

    state = torch.load(packaged_weights_path(), weights_only=True)
    key = next(iter(state))
    state[key] = torch.zeros(1, 2, 3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(DataError, match="does not fit"):
        map_packaged_state(timm.create_model("tf_efficientnet_lite0", pretrained=False), str(bad))
    state.pop(key)
    torch.save(state, bad)
    with pytest.raises(DataError, match="295 tensors"):
        map_packaged_state(timm.create_model("tf_efficientnet_lite0", pretrained=False), str(bad))


@pytest.mark.parametrize("name, dim", [("resnet18", 512), ("mobilenetv3", 1280), ("vit_tiny", 192), ("torchvision:resnet18", 512)])
def test_other_backbones_build_without_weights(name, dim):
    b = create_backbone(name, pretrained=False)
    assert b.feature_dim == dim and b(torch.rand(1, 3, 32, 32)).shape == (1, dim)
    assert b.num_stages >= 3


def test_pretrained_weights_offline_give_a_clear_error():
    with pytest.raises(ConfigError, match="resnet18.*not available.*model.weights"):
        create_backbone("resnet18", pretrained=True)


def test_local_checkpoint_is_loaded_safely(tmp_path):
    source = create_backbone("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.model.state_dict(), path)
    loaded = create_backbone("resnet18", weights=str(path))
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(source(x), loaded(x))
    with pytest.raises(DataError, match="does not fit backbone 'mobilenetv3'"):
        create_backbone("mobilenetv3", weights=str(path))
    evil = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "obj": object()}, evil)
    with pytest.raises(DataError, match="cannot read weights file"):
        create_backbone("resnet18", weights=str(evil))


def test_unfreeze_last_stage_only(lite0):
    import copy

    b = copy.deepcopy(lite0)
    params = b.unfreeze(1)
    trainable = {id(p) for p in b.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in params} and 0 < len(params) < len(list(b.parameters()))
    assert all(id(p) in trainable for p in b.model.conv_head.parameters())
    assert not any(p.requires_grad for p in b.model.conv_stem.parameters())


def test_unknown_names():
    with pytest.raises(ConfigError, match="unknown timm model"):
        create_backbone("timm:not_a_model", pretrained=False)
    with pytest.raises(ConfigError, match="unknown torchvision model"):
        create_backbone("torchvision:not_a_model", pretrained=False)


def test_activation_checkpointing_gives_the_same_input_gradients(lite0):
    x = torch.rand(2, 3, 48, 48)

    def input_grad(enabled: bool):
        lite0.set_activation_checkpointing(enabled)
        delta = torch.zeros(1, 3, 48, 48, requires_grad=True)
        out = lite0(x + delta)
        out.square().sum().backward()
        return out.detach(), delta.grad

    try:
        plain, recomputed = input_grad(False), input_grad(True)
    finally:
        lite0.set_activation_checkpointing(False)
    assert torch.equal(plain[0], recomputed[0]) and torch.equal(plain[1], recomputed[1])


def test_activation_checkpointing_on_a_backbone_without_it_is_a_config_error():
    backbone = create_backbone("torchvision:resnet18", pretrained=False)
    backbone.set_activation_checkpointing(False)  # asking for nothing is fine
    with pytest.raises(ConfigError, match="does not support it"):
        backbone.set_activation_checkpointing(True)
