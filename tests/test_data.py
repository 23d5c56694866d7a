import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fedcl.data import SCENARIOS, build_benchmark, load_dataset, to_model_input
from fedcl.data.datasets import cifar10, cifar100, fashion_mnist, imagefolder
from fedcl.data.idx import read_idx, write_idx
from fedcl.data.shifts import apply_shift
from fedcl.errors import ConfigError, DataError


def write_fake_fmnist(folder, n_train=40, n_test=20, gz=True):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", rng.integers(0, 255, (n_train, 28, 28)))
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", np.arange(n_train) % 10)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", rng.integers(0, 255, (n_test, 28, 28)))
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", np.arange(n_test) % 10)


def test_real_fashion_mnist(fmnist):
    assert fmnist.train.images.shape == (60000, 1, 28, 28)
    assert fmnist.test.images.shape == (10000, 1, 28, 28)
    assert fmnist.num_classes == 10 and set(fmnist.train.labels.unique().tolist()) == set(range(10))


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_from_a_user_folder(tmp_path, gz):
    write_fake_fmnist(tmp_path, gz=gz)
    d = fashion_mnist(root=tmp_path)
    assert len(d.train) == 40 and len(d.test) == 20 and d.train.labels[:3].tolist() == [0, 1, 2]


def test_corrupt_idx_names_the_file(tmp_path):
    write_fake_fmnist(tmp_path, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        fashion_mnist(root=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"garbage!")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "t10k-labels-idx1-ubyte")


def test_missing_fashion_mnist_folder(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        fashion_mnist(root=tmp_path)


def test_digits_are_offline_and_scaled():
    d = load_dataset("digits")
    assert len(d.train) + len(d.test) == 1797 and d.train.images.max() == 255


def _write_cifar(root, name, n=30, classes=10):
    folder_name, batches, label_key, meta, names_key = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels", "batches.meta", "label_names"),
        "cifar100": ("cifar-100-python", ["train", "test"], "fine_labels", "meta", "fine_label_names"),
    }[name]
    folder = root / folder_name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for b in batches:
        data = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), label_key: [i % classes for i in range(n)]}
        (folder / b).write_bytes(pickle.dumps(data))
    (folder / meta).write_bytes(pickle.dumps({names_key: [f"c{i}" for i in range(classes)]}))
    return folder


def test_cifar10_in_its_on_disk_format(tmp_path):
    _write_cifar(tmp_path, "cifar10")
    d = cifar10(root=tmp_path)
    assert d.train.images.shape == (150, 3, 32, 32) and d.test.images.shape == (30, 3, 32, 32)
    assert d.class_names[:2] == ["c0", "c1"]


def test_cifar100_in_its_on_disk_format(tmp_path):
    _write_cifar(tmp_path, "cifar100", n=200, classes=100)
    d = cifar100(root=tmp_path)
    assert d.num_classes == 100 and len(d.train) == 200


class Exploit:
    def __reduce__(self):  # eval, not print: a process that imported Ray has print replaced by Ray's own
        return (eval, ("'pwned'",))


def test_cifar_file_with_code_is_refused(tmp_path):
    folder = _write_cifar(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Exploit(), "labels": []}))
    with pytest.raises(DataError, match="refusing to load 'builtins.eval'"):
        cifar10(root=tmp_path)


def test_imagefolder(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20 + i, 17), colour).save(tmp_path / split / cls / f"{i}.png")
    d = imagefolder(root=tmp_path, size=16)
    assert d.class_names == ["cat", "dog"] and d.train.images.shape == (6, 3, 16, 16)
    assert d.train.images[d.train.labels == 0][:, 0].float().mean() > 200  # red cats
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        imagefolder(root=tmp_path, size=16)


def test_to_model_input_converts_grey_small_images():
    x = to_model_input(torch.full((2, 1, 28, 28), 255, dtype=torch.uint8), 40)
    assert x.shape == (2, 3, 40, 40) and x.dtype == torch.float32 and torch.allclose(x, torch.ones_like(x))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenarios(fmnist, scenario):
    b = build_benchmark(fmnist, scenario, num_tasks=3, classes_per_task=2 if scenario != "domain_incremental" else 10,
                        max_train_per_class=20, max_test_per_class=10, seed=3)
    assert b.num_tasks == 3 and len(b.test_stream) == 3
    assert b.task_ids_at_test == (scenario == "task_incremental")
    for train, test in zip(b.train_stream, b.test_stream):
        assert set(train.data.labels.tolist()) == set(train.classes) == set(test.data.labels.tolist())
        assert train.task_id == test.task_id
    if scenario == "domain_incremental":
        assert [e.domain for e in b.train_stream] == ["none", "rotate:45", "noise:0.25"]
        assert all(e.classes == list(range(10)) or sorted(e.classes) == list(range(10)) for e in b.train_stream)
        assert not torch.equal(b.test_stream[0].data.images, b.test_stream[1].data.images)
        assert torch.equal(b.test_stream[0].data.labels, b.test_stream[1].data.labels)
    else:
        groups = [set(e.classes) for e in b.train_stream]
        assert all(len(g) == 2 for g in groups) and len(set.union(*groups)) == 6
        assert all(len(e) == 40 for e in b.train_stream) and all(len(e) == 20 for e in b.test_stream)


def test_class_order_is_seeded_and_configurable(fmnist):
    a = build_benchmark(fmnist, num_tasks=5, classes_per_task=2, max_train_per_class=5, seed=1)
    b = build_benchmark(fmnist, num_tasks=5, classes_per_task=2, max_train_per_class=5, seed=1)
    c = build_benchmark(fmnist, num_tasks=5, classes_per_task=2, max_train_per_class=5, seed=2)
    assert a.class_order == b.class_order != c.class_order
    assert torch.equal(a.train_stream[0].data.images, b.train_stream[0].data.images)
    fixed = build_benchmark(fmnist, num_tasks=2, classes_per_task=2, class_order=[9, 8, 7, 6], max_train_per_class=5)
    assert fixed.task_classes == [[9, 8], [7, 6]]


def test_scenario_errors(fmnist):
    with pytest.raises(ConfigError, match="need 12 classes"):
        build_benchmark(fmnist, num_tasks=6, classes_per_task=2)
    with pytest.raises(ConfigError, match="class_order"):
        build_benchmark(fmnist, num_tasks=1, classes_per_task=2, class_order=[1, 1])
    with pytest.raises(ConfigError, match="domain shift"):
        build_benchmark(fmnist, "domain_incremental", num_tasks=2, domains=["none", "twist:3"])


@pytest.mark.parametrize("domain", ["rotate:90", "noise:0.3", "blur:1.0", "color:0.8", "invert"])
def test_shifts_change_images_deterministically(domain):
    x = (torch.rand(4, 1, 16, 16) * 255).to(torch.uint8)
    y = apply_shift(x, domain, seed=5)
    assert y.dtype == torch.uint8 and y.shape[-2:] == x.shape[-2:] and not torch.equal(y[:, :1], x)
    assert torch.equal(y, apply_shift(x, domain, seed=5))


def test_an_empty_fedcl_data_means_the_default_cache_not_the_working_folder(monkeypatch, tmp_path):
    from pathlib import Path

    from fedcl.data.datasets import default_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FEDCL_DATA", "")
    assert default_cache_dir() == tmp_path / ".cache" / "fedcl"
    monkeypatch.setenv("FEDCL_DATA", str(tmp_path / "mine"))
    assert default_cache_dir() == Path(tmp_path / "mine")
