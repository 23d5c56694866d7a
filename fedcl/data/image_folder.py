"""Lists a ``<split>/<class>/**/<image>`` folder without leaving a class: a symlink that points outside its
class folder is not followed (its images would be relabelled), and a symlink loop is an error."""

from __future__ import annotations

import os
from pathlib import Path

from fedcl.errors import DataError

#: file endings read as images (torchvision's ImageFolder reads the same)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _class_images(class_dir: Path) -> list[tuple[str, str]]:
    """(folder, file name) of every image under ``class_dir`` that stays inside it."""
    root = class_dir.resolve()
    found: list[tuple[str, str]] = []

    def walk(folder: Path, ancestors: tuple[Path, ...]) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            target = path.resolve() if entry.is_symlink() else path
            if entry.is_symlink() and not _inside(target, root):
                continue  # leaves the class folder: not followed
            if entry.is_dir():
                if target in ancestors:
                    raise DataError(f"imagefolder: symlink loop at {path} (it points back to {target})")
                walk(path, (*ancestors, target))
            elif entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
                found.append((str(folder), entry.name))

    try:
        walk(class_dir, (root,))
    except OSError as exc:
        raise DataError(f"imagefolder: cannot list {class_dir} ({exc.strerror or exc.__class__.__name__})") from None
    return found


def scan_image_folder(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, (image path, class index) pairs) of ``folder/<class>/...``, in ImageFolder's order."""
    try:
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except OSError as exc:
        raise DataError(f"imagefolder: cannot list {folder} ({exc.strerror or exc.__class__.__name__})") from None
    if not classes:
        raise DataError(f"imagefolder: {folder} has no class folders (expected {folder}/<class>/<image>)")
    samples: list[tuple[str, int]] = []
    for index, name in enumerate(classes):
        images = sorted(_class_images(folder / name))
        if not images:
            raise DataError(f"imagefolder: class folder {folder / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        samples += [(os.path.join(root, file), index) for root, file in images]
    return classes, samples
