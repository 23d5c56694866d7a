"""No NaN is trained on or reported (fedcl/guards.py), and image folders stay inside their classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from fedcl.config import build_config
from fedcl.data.image_folder import scan_image_folder
from fedcl.errors import DataError
from fedcl.builder import make_benchmark, make_learner, make_method, make_model
from fedcl.guards import NonFiniteError, check_global_state, first_non_finite


def test_a_nan_loss_stops_the_training_loop_naming_the_task():
    cfg = build_config(None, None, ["data.dataset=digits", "data.image_size=16", "data.num_tasks=2", "data.max_train_per_class=6",
                                    "data.max_test_per_class=2", "model.pretrained=false", "train.epochs=1"])
    benchmark = make_benchmark(cfg)
    method = make_method(cfg)
    model = make_model(cfg, benchmark, method)
    learner = make_learner(cfg, model, method, benchmark, torch.device("cpu"))
    with torch.no_grad():
        for p in model.head.parameters():
            p.fill_(float("nan"))
    first_task = benchmark.train_stream[0].task_id
    with pytest.raises(NonFiniteError, match=f"training loss became nan in task {first_task}"):
        learner.fit(benchmark)

def test_the_global_state_guard_names_the_round_and_the_cause():
    finite = {"head.weight": torch.ones(3), "head.count": torch.arange(3)}
    assert check_global_state(finite, 1, {}) is None
    broken = {**finite, "transform.delta": torch.tensor([0.0, float("inf")])}
    with pytest.raises(NonFiniteError, match=r"round 3 \(infinite values in 'transform.delta'\).*federation.server_lr=inf"):
        check_global_state(broken, 3, {"federation": {"server_lr": float("inf"), "num_clients": 3}})
    with pytest.raises(NonFiniteError, match="round 2 .*may be too large"):
        check_global_state({"w": torch.tensor([float("nan")])}, 2, {"federation": {"server_lr": 0.1}})
    assert first_non_finite({"w": torch.tensor([1.0, float("nan"), float("inf")])}) == "NaN values in 'w'"

def _image(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)

def test_symlinks_that_leave_a_class_folder_are_not_followed(tmp_path):
    for cls in ("cat", "dog"):
        _image(tmp_path / cls / "0.png")
    _image(tmp_path / "cat" / "sub" / "1.png")
    (tmp_path / "cat" / "dog.png").symlink_to(tmp_path / "dog" / "0.png")  # another class's image
    (tmp_path / "cat" / "dogs").symlink_to(tmp_path / "dog", target_is_directory=True)  # another class's folder
    (tmp_path / "cat" / "inner").symlink_to(tmp_path / "cat" / "sub", target_is_directory=True)  # stays inside: followed
    classes, samples = scan_image_folder(tmp_path)
    assert classes == ["cat", "dog"]
    relative = sorted((str(Path(p).relative_to(tmp_path)), label) for p, label in samples)
    assert relative == [("cat/0.png", 0), ("cat/inner/1.png", 0), ("cat/sub/1.png", 0), ("dog/0.png", 1)]

def test_a_symlink_loop_in_an_image_folder_is_refused(tmp_path):
    _image(tmp_path / "cat" / "deep" / "0.png")
    (tmp_path / "cat" / "deep" / "up").symlink_to(tmp_path / "cat", target_is_directory=True)
    with pytest.raises(DataError, match="symlink loop at"):
        scan_image_folder(tmp_path)
