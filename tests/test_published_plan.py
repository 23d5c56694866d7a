"""The published federated class-incremental plan (simulations/published_cil.toml): every cell's config is valid on
a GPU machine, its ViT-B/16 exists in timm, and one cell runs end to end on tiny generated CIFAR-100 files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedcl.backbones import create_backbone
from fedcl.config import build_config
from fedcl.config import machine as machine_module
from fedcl.federation.settings import FedRunConfig
from fedcl.federation.simulation import run_federated
from fedcl.sweep import read_plan
from tests.test_data import _write_cifar

PLAN = Path(__file__).resolve().parents[1] / "simulations" / "published_cil.toml"


@pytest.fixture
def gpu_machine(monkeypatch):
    """The plan asks for fractional GPUs: check it as a machine with one GPU would."""
    monkeypatch.setattr(machine_module.Machine, "here", classmethod(lambda cls: cls(16, 1, False)))


def test_every_cell_is_the_published_setting(gpu_machine):
    plan = read_plan(PLAN)  # validates every cell's config
    cells = plan.cells()
    assert len(cells) == 6 * 2 * 1 * 3
    for cell in cells:
        cfg = plan.config(cell)
        f = cfg.federation
        assert (f.num_clients, f.rounds_per_task, f.partition, f.dirichlet_alpha) == (10, 5, "dirichlet", 0.5)
        assert (cfg.data.num_tasks, cfg.data.image_size, cfg.data.scenario) == (10, 224, "class_incremental")
        assert cfg.model.backbone == "timm:vit_base_patch16_224.augreg_in21k"
    heads = {plan.config(c).model.head.name for c in cells}
    assert heads == {"ridge", "lda", "ncm", "linear"}


def test_the_backbone_is_vit_b16_in_timm():
    with torch.device("meta"):  # the architecture without initialising 86 M weights
        backbone = create_backbone("timm:vit_base_patch16_224.augreg_in21k", pretrained=False)
    assert backbone.feature_dim == 768


def test_a_cell_runs_on_tiny_generated_cifar100(gpu_machine, tmp_path):
    _write_cifar(tmp_path, "cifar100", n=200, classes=100)
    plan = read_plan(PLAN)
    cell = next(c for c in plan.cells() if c.method == "ridge" and c.scenario == "cifar100_10tasks" and c.seed == 0)
    tiny = [f'data.root="{tmp_path}"', "data.download=false", "model.pretrained=false", "model.backbone=timm:vit_tiny_patch16_224",
            "data.max_train_per_class=1", "data.max_test_per_class=1", "federation.num_clients=2", "federation.rounds_per_task=1",
            "federation.backend=inline", "federation.client_num_gpus=0", "federation.client_num_cpus=1", "train.device=cpu",
            "federation.evaluate_every_round=false", "data.image_size=32"]  # (the cell's 224 px: test_every_cell_is_the_published_setting)
    cfg = build_config(plan.preset, None, [*cell.overrides, *tiny], schema=FedRunConfig)
    results = run_federated(cfg, tmp_path / "out", quiet=True)
    assert results["num_tasks"] == 10 and len(results["accuracy_matrix"]) == 10
    assert results["communication"]["bytes_up"] > 0
