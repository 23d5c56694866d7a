"""A run's output folder: checked before any work starts, written atomically, replaced only on success.

Every file goes to a temporary file in the same folder, is flushed to disk and then moved into
place with :func:`os.replace`, so a crash never leaves a half-written file under a final name.
While a run is in progress it writes to *staged* names (``checkpoint.partial.safetensors``,
``client_state.partial/``); they replace the previous run's files only when the run succeeds
(:func:`promote`), so a failing or killed run leaves what was there byte for byte.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fedcl.errors import FedclError

#: inserted before a file's suffix (or after a folder's name) for what a run in progress writes
STAGED = ".partial"
_TEMP_PREFIX = ".fedcl-"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class OutputError(FedclError):
    """An output folder that cannot be created or written."""


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def prepare_out_dir(out: str | Path, option: str = "--out") -> Path:
    """Create ``out`` if needed and prove it is writable (one clear error otherwise), before any work starts."""
    out = Path(out)
    for parent in [out, *out.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is" if parent == out else f"lies under {parent}, which is"
                raise OutputError(f"{option} {out} {where} a file, not a folder; choose another output folder")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".probe", dir=out)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{option} {out} is not a writable folder ({_why(exc)}); choose another output folder") from None
    return out


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the file itself was synced
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], None], sync: bool = True) -> Path:
    """``write(temporary path)``, flush it to disk, then move it to ``path`` in one step. ``sync=False``: not
    flushed (still never half-written under ``path`` after a crash of the process; after a crash of the
    machine, only what a later :func:`os.sync` covered is sure to be there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # what a plain open() would give (mkstemp makes it private)
        write(tmp)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        _fsync_dir(path.parent)
    return path


def remove_stale_temporaries(folder: str | Path, older_than_s: float) -> None:
    """Delete the temporary files of :func:`write_atomic` that a killed writer left in ``folder`` (those older than
    ``older_than_s``: a younger one may still be being written)."""
    for old in Path(folder).glob(f"{_TEMP_PREFIX}*.tmp"):
        try:
            if time.time() - old.stat().st_mtime > older_than_s:
                old.unlink()
        except OSError:
            pass


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def staged(path: str | Path) -> Path:
    """Where a run in progress keeps ``path``: ``checkpoint.safetensors`` -> ``checkpoint.partial.safetensors``."""
    path = Path(path)
    return path.with_name(f"{path.stem}{STAGED}{path.suffix}")


def promote(path: str | Path) -> None:
    """Move the staged version of a file or folder over ``path`` (nothing happens if there is none)."""
    path = Path(path)
    source = staged(path)
    if not source.exists():
        return
    if source.is_dir():
        _promote_dir(source, path)
    else:
        os.replace(source, path)
        _fsync_dir(path.parent)


def promote_all(out: str | Path, *names: str) -> Path:
    """:func:`promote` each of ``names`` in ``out``, in order; returns the last one's path."""
    for name in names:
        promote(Path(out) / name)
    return Path(out) / names[-1]


def _retired(folder: Path) -> Path:
    return folder.with_name(f"{folder.name}.old")


def _promote_dir(source: Path, target: Path) -> None:
    old = _retired(target)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(folder: str | Path) -> None:
    """Undo a folder promotion cut short between its two renames (the previous folder is back in place)."""
    folder = Path(folder)
    old = _retired(folder)
    if old.is_dir() and not folder.exists():
        os.replace(old, folder)


def file_identity(path: str | Path) -> tuple[int, int, int] | None:
    """(inode, modification time, size) of a file, or None: tells whether a run replaced it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
