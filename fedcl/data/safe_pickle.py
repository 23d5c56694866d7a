"""Unpickling of dataset files (CIFAR's python format) restricted to plain data.

Only builtin containers and numpy arrays may be reconstructed; any other global
(code) in the file is refused, so a malicious file cannot run anything.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from fedcl.errors import DataError

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}'")


def load_data_pickle(path: str | Path) -> Any:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return _DataOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except Exception as exc:
        raise DataError(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None
