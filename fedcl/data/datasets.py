"""Dataset loaders (registry): Fashion-MNIST, scikit-learn digits, CIFAR-10/100, ImageFolder.

Each loader returns decoded uint8 arrays; results are cached per process so a
worker decodes a dataset once and reuses it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedcl.data.arrays import DatasetSplits, ImageArrays
from fedcl.data.idx import read_idx
from fedcl.data.image_folder import scan_image_folder
from fedcl.data.safe_pickle import load_data_pickle
from fedcl.deferred_dynamo import import_vision
from fedcl.errors import DataError
from fedcl.optional import require
from fedcl.registry import Registry

DATASETS: Registry[Callable[..., DatasetSplits]] = Registry("dataset", key="data.dataset")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def default_cache_dir() -> Path:
    """$FEDCL_DATA, or ~/.cache/fedcl when it is unset or empty (an empty one would mean the working folder)."""
    return Path(os.environ.get("FEDCL_DATA") or Path.home() / ".cache" / "fedcl")


@functools.lru_cache(maxsize=8)
def load_dataset(name: str, root: str | None = None, download: bool = False) -> DatasetSplits:
    """Load a registered dataset by name (cached per process)."""
    return DATASETS.get(name)(root=Path(root) if root else None, download=download)


def _arrays(images: np.ndarray, labels: np.ndarray) -> ImageArrays:
    if images.ndim == 3:
        images = images[:, None]
    return ImageArrays(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_folder(candidates: list[Path]) -> Path | None:
    for folder in candidates:
        if _find_idx(folder, "train-images-idx3-ubyte"):
            return folder
    return None


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: Path | None = None, download: bool = False) -> DatasetSplits:
    """Fashion-MNIST from IDX files: ``root``, $FEDCL_DATA, Debian's package, or a torchvision download."""
    cache = default_cache_dir() / "fashion-mnist"
    candidates = [root] if root else [cache, SYSTEM_FASHION_MNIST, cache / "FashionMNIST" / "raw"]
    folder = _idx_folder([c for c in candidates if c is not None])
    where = root or f"{cache} or {SYSTEM_FASHION_MNIST}"
    if folder is None and download:
        torchvision = import_vision("torchvision")
        try:
            torchvision.datasets.FashionMNIST(str(root or cache), download=True)
        except Exception as exc:  # offline, proxy, disk full...
            raise DataError(f"Fashion-MNIST not found in {where} and the download failed ({exc.__class__.__name__}); "
                            "install Debian's dataset-fashion-mnist or set data.root") from None
        folder = _idx_folder([Path(root or cache) / "FashionMNIST" / "raw"])
    if folder is None:
        raise DataError(
            f"Fashion-MNIST not found in {where}: install Debian's dataset-fashion-mnist, "
            "or set data.download=true to fetch it with torchvision"
        )
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
        if images_path is None or labels_path is None:
            raise DataError(f"{folder}: missing {prefix}-images-idx3-ubyte or {prefix}-labels-idx1-ubyte")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{images_path}: {images.shape} images do not match {labels.shape} labels")
        if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{labels_path}: label {labels.max()} out of range")
        parts[split] = _arrays(images, labels)
    return DatasetSplits("fashion_mnist", parts["train"], parts["test"], FASHION_MNIST_CLASSES)


@DATASETS.register("digits")
def digits(root: Path | None = None, download: bool = False) -> DatasetSplits:
    """scikit-learn's 8x8 digits (bundled, 1797 images); a seeded 80/20 split."""
    bunch = require("sklearn.datasets", "simulation", "data.dataset=digits", "scikit-learn").load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    cut = int(0.8 * len(images))
    train, test = order[:cut], order[cut:]
    names = [str(d) for d in range(10)]
    return DatasetSplits("digits", _arrays(images[train], bunch.target[train]), _arrays(images[test], bunch.target[test]), names)


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", "batches.meta", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names"),
}


def _read_cifar(name: str, root: Path | None, download: bool) -> DatasetSplits:
    folder_name, train_files, test_files, label_key, meta_file, names_key = _CIFAR[name]
    base = root or default_cache_dir()
    folder = base / folder_name
    if not folder.is_dir() and download:
        torchvision = import_vision("torchvision")
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        try:
            torchvision.datasets.utils.download_and_extract_archive(cls.url, str(base), filename=cls.filename, md5=cls.tgz_md5)
        except Exception as exc:
            raise DataError(f"{name} not found in {folder} and the download failed ({exc.__class__.__name__}); set data.root") from None
    if not folder.is_dir():
        raise DataError(f"{name} not found: expected {folder} (set data.root, or data.download=true)")

    def read(files: list[str]) -> ImageArrays:
        images, labels = [], []
        for file in files:
            batch = load_data_pickle(folder / file)
            if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
                raise DataError(f"{folder / file}: not a {name} batch (needs 'data' and '{label_key}')")
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[label_key]):
                raise DataError(f"{folder / file}: data of shape {data.shape} is not N x 3072 with one label each")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        return _arrays(np.concatenate(images), np.concatenate(labels))

    meta = load_data_pickle(folder / meta_file)
    class_names = [str(n) for n in meta[names_key]] if isinstance(meta, dict) and names_key in meta else None
    if class_names is None:
        raise DataError(f"{folder / meta_file}: missing '{names_key}'")
    return DatasetSplits(name, read(train_files), read(test_files), class_names)


@DATASETS.register("cifar10")
def cifar10(root: Path | None = None, download: bool = False) -> DatasetSplits:
    return _read_cifar("cifar10", root, download)


@DATASETS.register("cifar100")
def cifar100(root: Path | None = None, download: bool = False) -> DatasetSplits:
    return _read_cifar("cifar100", root, download)


#: PIL modes of 8-bit images that convert to RGB without losing meaning (16-bit and float images do not)
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")


@DATASETS.register("imagefolder")
def imagefolder(root: Path | None = None, download: bool = False, size: int = 64) -> DatasetSplits:
    """A user's ``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` (ImageFolder's layout; symlinks
    that leave a class folder are not followed, see :mod:`fedcl.data.image_folder`).

    Images are decoded once, converted to RGB and resized to ``size`` (a square) for storage.
    """
    if root is None:
        raise DataError("dataset 'imagefolder' needs data.root (a folder with train/ and test/ subfolders)")
    from PIL import Image
    TF = import_vision("torchvision.transforms.functional")

    splits = {}
    class_names: list[str] | None = None
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"imagefolder: {folder} not found (expected {root}/train/<class>/... and {root}/test/<class>/...)")
        classes, samples = scan_image_folder(folder)
        if class_names is not None and classes != class_names:
            raise DataError(f"imagefolder: classes of {folder} differ from those of {root / 'train'}")
        class_names = classes
        images = []
        for path, _ in samples:
            try:
                with Image.open(path) as opened:
                    img = opened.copy()  # decodes fully, in its own mode (torchvision's loader would force RGB)
            except Exception as exc:
                raise DataError(f"cannot decode image {path}: {exc}") from None
            if img.mode not in IMAGE_MODES:
                raise DataError(f"image {path} has mode {img.mode!r}; fedcl reads 8-bit images ({', '.join(IMAGE_MODES)})")
            img = img.convert("RGB").resize((size, size))
            images.append(TF.pil_to_tensor(img))
        splits[split] = ImageArrays(torch.stack(images), torch.tensor([label for _, label in samples], dtype=torch.long))
    return DatasetSplits(f"imagefolder:{root}", splits["train"], splits["test"], class_names or [])


def dataset_names() -> list[str]:
    return DATASETS.names()
