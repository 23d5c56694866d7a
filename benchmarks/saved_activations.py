"""Exact bytes that one training step keeps for its backward pass, counted by autograd's saved-tensor hooks
(unaffected by the allocator or by other jobs on the machine, unlike resident memory).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/saved_activations.py [--image-size 64] [--batch-size 32]

For each variant: the bytes of the distinct tensors the forward pass saves for backward, plus what training
holds besides (gradients of the trained parameters and Adam's two moments), and the ratio to full fine-tuning.
With checkpointing, the recomputation during backward adds one block's activations at a time (the largest
block's figure is printed apart): a lower bound on the peak, not the peak itself.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from memory import checkpoint_stem_and_head

from fedcl.backbones import create_backbone
from fedcl.heads import create_head
from fedcl.learner import TrainSettings
from fedcl.methods import create_method
from fedcl.model import ContinualModel
from fedcl.transforms import create_transform


def saved_bytes(model: ContinualModel, images: torch.Tensor, labels: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves during one forward pass (weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()} | {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(images), labels)
    loss.backward()
    return sum(seen.values())


def largest_block(model: ContinualModel, images: torch.Tensor, labels: torch.Tensor) -> int:
    """The most bytes one backbone block saves (what a checkpointed backward recomputes at once)."""
    net = model.backbone.model
    sizes = []
    x = net.bn1(net.conv_stem((model.transform(images) - model.backbone.mean) / model.backbone.std))
    for block in (b for stage in net.blocks for b in stage):
        seen: dict[int, int] = {}
        x = x.detach().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) and t,
                                                      lambda t: t):
            x = block(x)
        sizes.append(sum(seen.values()))
    return max(sizes)


def variant(name: str, backbone, size: int) -> tuple[ContinualModel, int]:
    """(model, bytes of training state besides activations: trained parameters' gradients + Adam's moments)."""
    method = create_method("finetune" if name == "finetune" else "input_tuning")
    model = ContinualModel(create_transform("additive" if method.uses_transform else "none", size), copy.deepcopy(backbone),
                           create_head("linear", backbone.feature_dim, 10))
    groups = method.configure(model, TrainSettings())
    model.backbone.set_activation_checkpointing("checkpointing" in name)
    if name.endswith("stem_head"):
        checkpoint_stem_and_head(model.backbone.model)
    model.train()
    trained = sum(p.numel() * p.element_size() for g in groups for p in g["params"])
    return model, 3 * trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    backbone = create_backbone("efficientnet_lite0")
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 10, (args.batch_size,))
    rows = {}
    for name in ("input_tuning", "input_tuning_checkpointing", "input_tuning_checkpointing_stem_head", "finetune"):
        model, state = variant(name, backbone, args.image_size)
        rows[name] = (saved_bytes(model, images, labels), state)
    block = largest_block(variant("input_tuning", backbone, args.image_size)[0], images, labels)
    full = sum(rows["finetune"])
    print(f"{args.image_size} px, batch {args.batch_size}: MB kept for backward + MB of gradients and Adam moments; ratio of the sum to full fine-tuning")
    for name, (saved, state) in rows.items():
        print(f"{name:40s} {saved / 2**20:8.1f} + {state / 2**20:6.1f} MB   {(saved + state) / full:.3f}")
    print(f"largest block's saved activations (recomputed at once in a checkpointed backward): {block / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
