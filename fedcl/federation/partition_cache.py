"""Client partitions kept on disk, so that only the first process of a run computes them.

A partition is a pure function of the label array and the partitioning settings. Computing it needs
flwr-datasets, whose import pulls HF datasets, pandas, scipy and seaborn: about 3 s of CPU in every
process, paid by each simulation worker and by every ClientApp message of a deployment. The first
process writes ``<cache>/partitions/<key>.npz`` (numpy arrays, never pickles); later ones read it.
A file that is missing, unreadable or inconsistent with its key is computed again and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

#: bump when the partition of the same inputs changes (the file format or fedcl's use of the partitioners)
FORMAT = 1


def _partitioners_version() -> str:
    try:
        return metadata.version("flwr-datasets")
    except metadata.PackageNotFoundError:
        return "absent"


def cache_file(folder: Path, labels: np.ndarray, settings: dict) -> Path:
    """The file of a partition: named by a hash of the labels, the settings and flwr-datasets' version."""
    digest = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    digest.update(json.dumps({**settings, "format": FORMAT, "flwr-datasets": _partitioners_version()}, sort_keys=True).encode())
    return folder / "partitions" / f"{digest.hexdigest()[:32]}.npz"


def load(path: Path, num_clients: int, num_samples: int) -> list[np.ndarray] | None:
    """The cached partitions, or None when the file is absent or does not hold ``num_clients`` disjoint sorted
    partitions of ``range(num_samples)``."""
    try:
        if path.stat().st_size > 8 * (num_samples + num_clients) + 4096:  # larger than any honest file
            return None
        with np.load(path, allow_pickle=False) as f:
            rows, sizes = np.asarray(f["rows"]), np.asarray(f["sizes"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if rows.dtype != np.int64 or sizes.dtype != np.int64 or rows.ndim != 1 or sizes.shape != (num_clients,):
        return None
    if (sizes < 0).any() or int(sizes.sum()) != len(rows) or len(rows) > num_samples:
        return None
    if len(rows) and (rows.min() < 0 or rows.max() >= num_samples or len(np.unique(rows)) != len(rows)):
        return None
    parts = np.split(rows, np.cumsum(sizes)[:-1])
    if any((np.diff(p) <= 0).any() for p in parts):
        return None
    return parts


def save(path: Path, parts: list[np.ndarray]) -> None:
    """Write atomically (a temporary file renamed over ``path``); a cache that cannot be written is skipped."""
    rows = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    sizes = np.asarray([len(p) for p in parts], dtype=np.int64)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partitions-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, rows=rows, sizes=sizes)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
