"""Client partitions kept on disk, so that only the first process of a run computes them.

A partition is a pure function of the label array and the partitioning settings. Computing it needs
flwr-datasets, whose import pulls HF datasets, pandas, scipy and seaborn: about 3 s of CPU in every
process, paid by each simulation worker and by every ClientApp message of a deployment. The first
process writes ``<cache>/partitions/<key>.npz``; later ones read it. The file is only a cache: one
that is missing, not a regular file, compressed, oversized, malformed or inconsistent with its key
is computed again and replaced. It is read without numpy's loader (no pickles, no allocation that
the file's header alone decides): two uncompressed int64 members, each bounded before it is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from fedcl.outputs import remove_stale_temporaries, write_atomic

#: bump when the partition of the same inputs changes (the file format or fedcl's use of the partitioners)
FORMAT = 1
#: the packages whose behaviour the partition depends on (random streams, partitioners, dataset sharding)
PACKAGES = ("flwr-datasets", "datasets", "numpy")
#: a temporary file older than this was left by a killed writer
STALE_S = 3600


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_file(folder: Path, labels: np.ndarray, settings: dict) -> Path:
    """The file of a partition: named by a hash of the labels, the settings and the versions of :data:`PACKAGES`."""
    digest = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    versions = {p: _version(p) for p in PACKAGES}
    digest.update(json.dumps({**settings, "format": FORMAT, **versions}, sort_keys=True).encode())
    return folder / "partitions" / f"{digest.hexdigest()[:32]}.npz"


def _int64_member(archive: zipfile.ZipFile, name: str, max_len: int) -> np.ndarray | None:
    """A stored (uncompressed) ``.npy`` member holding a 1-D little-endian int64 array of at most ``max_len`` values."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > 8 * max_len + 512:
        return None
    with archive.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fp)
        if dtype != np.dtype("<i8") or len(shape) != 1 or shape[0] > max_len:
            return None
        data = fp.read(8 * shape[0] + 1)
    return np.frombuffer(data, dtype="<i8").astype(np.int64) if len(data) == 8 * shape[0] else None


def _read(path: Path, num_clients: int, num_samples: int) -> tuple[np.ndarray, np.ndarray] | None:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO in the way must not block
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with zipfile.ZipFile(f) as archive:
            if sorted(archive.namelist()) != ["rows.npy", "sizes.npy"]:
                return None
            rows, sizes = _int64_member(archive, "rows.npy", num_samples), _int64_member(archive, "sizes.npy", num_clients)
    return None if rows is None or sizes is None else (rows, sizes)


def _partitions(rows: np.ndarray, sizes: np.ndarray, num_clients: int, num_samples: int) -> list[np.ndarray] | None:
    """``rows`` split by ``sizes`` when that gives ``num_clients`` disjoint, sorted partitions of ``range(num_samples)``."""
    if sizes.shape != (num_clients,) or (sizes < 0).any() or (sizes > len(rows)).any():
        return None
    if sum(int(s) for s in sizes) != len(rows):  # Python ints: an int64 sum could wrap around
        return None
    if len(rows) and (rows.min() < 0 or rows.max() >= num_samples or len(np.unique(rows)) != len(rows)):
        return None
    parts = np.split(rows, np.cumsum(sizes)[:-1])
    return None if any((np.diff(p) <= 0).any() for p in parts) else parts


def load(path: Path, num_clients: int, num_samples: int) -> list[np.ndarray] | None:
    """The cached partitions, or None when the file is absent or unusable (a cache: nothing here raises)."""
    try:
        read = _read(path, num_clients, num_samples)
    except Exception:  # noqa: BLE001 - a damaged cache file of any kind means "compute it again"
        return None
    return None if read is None else _partitions(*read, num_clients, num_samples)


def save(path: Path, parts: list[np.ndarray]) -> None:
    """Write atomically (:func:`~fedcl.outputs.write_atomic`, unflushed: a torn file is only recomputed); a cache
    that cannot be written is skipped."""
    rows = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    sizes = np.asarray([len(p) for p in parts], dtype=np.int64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a path, np.savez would append ".npz" to it
            np.savez(f, rows=rows, sizes=sizes)

    try:
        remove_stale_temporaries(path.parent, STALE_S)
        write_atomic(path, write, sync=False)
    except OSError:
        pass
