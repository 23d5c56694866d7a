"""Model state <-> Flower ArrayRecord, with optional fp16 / 8-bit quantisation.

8-bit: each float tensor is sent as int8 codes plus a float32 (min, scale) pair
(stored under ``<key>::qparams``); decoding restores float32. Integer and float64
tensors (e.g. NCM counts) are sent as they are.

Clients quantise their *update* (local - received global, :func:`encode_update`) with
stochastic rounding, which is unbiased: an update smaller than one quantisation step still
moves the global model in expectation, instead of vanishing as with round-to-nearest. The
server adds the decoded update to its global state (:func:`decode_update`). Without
quantisation the state itself travels (the same bytes, and no reconstruction error).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedcl.errors import FedclError

QPARAMS = "::qparams"
#: suffix of a Gram change sent as a low-rank factor (read by :mod:`fedcl.federation.factors`, skipped here)
FACTOR = "::factor"
#: dtypes a tensor may travel as, by the model's dtype (float32 may be quantised to fp16 or int8 codes)
_WIRE_DTYPES = {torch.float32: (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.int8))}
_NUMPY_OF = {torch.float64: np.dtype(np.float64), torch.float16: np.dtype(np.float16), torch.int64: np.dtype(np.int64),
             torch.int32: np.dtype(np.int32), torch.uint8: np.dtype(np.uint8), torch.bool: np.dtype(np.bool_)}


class BadUpdateError(FedclError):
    """A client update that does not match the model (missing/extra keys, wrong shapes, non-finite values)."""


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_array(array: Array, what: str) -> np.ndarray:
    """``array``'s value, read without ``np.load``: its header is checked against its byte count before anything is
    allocated, so a reply of a few bytes whose header claims a huge shape cannot exhaust the server's memory; object
    dtypes (pickles) are refused. Read-only (a view of the reply's bytes)."""
    data = array.data
    if array.stype != "numpy.ndarray" or not isinstance(data, bytes):
        raise BadUpdateError(f"{what} is not a NumPy array")
    stream = io.BytesIO(data)
    try:
        reader = _HEADER_READERS.get(np.lib.format.read_magic(stream))
        if reader is None:
            raise ValueError("unsupported format version")
        shape, fortran_order, dtype = reader(stream)
    except (ValueError, TypeError, EOFError, OSError, SyntaxError) as exc:
        raise BadUpdateError(f"{what} is not a readable NumPy array ({type(exc).__name__})") from None
    count = math.prod(shape)
    if dtype.hasobject or count * dtype.itemsize != len(data) - stream.tell():
        raise BadUpdateError(f"{what}: its header ({dtype}, shape {tuple(shape)}) does not match its {len(data)} bytes")
    values = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
    return values.reshape(shape, order="F" if fortran_order else "C")


def _to_fp16(x: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    near = x.astype(np.float16)
    if rng is None:
        return near
    # the fp16 neighbour on x's other side, chosen with probability proportional to the distance
    other = np.nextafter(near, np.where(x > near.astype(np.float32), np.float16(np.inf), np.float16(-np.inf)).astype(np.float16))
    gap = other.astype(np.float32) - near.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(np.isfinite(gap) & (gap != 0), (x - near.astype(np.float32)) / gap, 0.0)
    return np.asarray(np.where(rng.random(x.shape) < p, other, near), dtype=np.float16)


def _to_int8(x: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = float(x.min()) if x.size else 0.0, float(x.max()) if x.size else 0.0
    scale = (hi - lo) / 255.0 or 1.0
    y = (x.astype(np.float64) - lo) / scale
    levels = np.round(y) if rng is None else np.floor(y + rng.random(x.shape))
    codes = np.asarray(np.clip(levels - 128, -128, 127), dtype=np.int8)  # (0-d stays an array)
    return codes, np.array([lo, scale], dtype=np.float32)


def encode(state: dict[str, torch.Tensor], quantization: str = "none", rng: np.random.Generator | None = None) -> ArrayRecord:
    """``state`` as an ArrayRecord; float32 tensors quantised to fp16 or int8 if asked, with stochastic
    rounding when ``rng`` is given (round-to-nearest otherwise)."""
    arrays: dict[str, Array] = {}
    for key, tensor in state.items():
        x = tensor.detach().cpu().numpy()
        if x.dtype == np.float32 and quantization == "fp16":
            x = _to_fp16(x, rng)
        elif x.dtype == np.float32 and quantization == "int8":
            x, qparams = _to_int8(x, rng)
            arrays[key + QPARAMS] = Array(qparams)
        arrays[key] = Array(x if x.flags.c_contiguous else x.copy(order="C"))  # (ascontiguousarray turns 0-d into 1-d)
    return ArrayRecord(arrays)


def encode_update(local: dict[str, torch.Tensor], received: dict[str, torch.Tensor], quantization: str, seed: int) -> ArrayRecord:
    """What a client sends: its state, or, when quantising, its update (local - received) with
    stochastic rounding seeded by ``seed`` (from the run seed, partition and round)."""
    if quantization == "none":
        return encode(local)
    update = {k: v - received[k].to(v.dtype) if v.is_floating_point() else v for k, v in local.items()}
    return encode(update, quantization, np.random.default_rng(seed))


def decode_update(record: ArrayRecord, global_state: dict[str, torch.Tensor], quantization: str, source: str = "update",
                  optional: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The client's state: decoded as is, or ``global + decoded update`` when quantised (see :func:`encode_update`)."""
    decoded = decode(record, global_state, source, optional)
    if quantization == "none":
        return decoded
    return {k: (global_state[k].double() + v.double()).to(v.dtype) if v.is_floating_point() else v for k, v in decoded.items()}


def decode(record: ArrayRecord, reference: dict[str, torch.Tensor], source: str = "update",
           optional: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Decode and validate against ``reference`` (same keys and shapes, finite values); keys in
    ``optional`` may be left out (a client without new statistics). Factors (``<key>::factor``) are not read here."""
    keys = [k for k in record if not k.endswith((QPARAMS, FACTOR))]
    missing = sorted(set(reference) - set(keys) - optional)
    extra = sorted(set(keys) - set(reference))
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise BadUpdateError(f"{source}: keys do not match the model ({detail})")
    out = {}
    for key in keys:
        x = wire = read_array(record[key], f"{source}: '{key}'")
        if key + QPARAMS in record:
            qparams = read_array(record[key + QPARAMS], f"{source}: quantisation parameters of '{key}'")
            if qparams.dtype != np.float32 or qparams.shape != (2,) or x.dtype != np.int8:
                raise BadUpdateError(f"{source}: '{key}' has malformed 8-bit quantisation parameters (expected 2 float32 values beside int8 codes)")
            lo, scale = qparams.astype(np.float64)
            x = ((x.astype(np.float64) + 128) * scale + lo).astype(np.float32)
        ref = reference[key]
        allowed = _WIRE_DTYPES.get(ref.dtype, (_NUMPY_OF.get(ref.dtype),))
        if wire.dtype not in allowed or (wire.dtype == np.int8 and key + QPARAMS not in record and ref.is_floating_point()):
            raise BadUpdateError(f"{source}: '{key}' has dtype {wire.dtype}, the model expects {str(ref.dtype).replace('torch.', '')}")
        if tuple(x.shape) != tuple(ref.shape):
            raise BadUpdateError(f"{source}: '{key}' has shape {tuple(x.shape)}, the model expects {tuple(ref.shape)}")
        t = torch.from_numpy(np.array(x)).to(ref.dtype)
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise BadUpdateError(f"{source}: '{key}' holds NaN or infinite values")
        out[key] = t
    return out
