"""A small client's Gram change as a low-rank factor: n x D values instead of the packed D(D+1)/2.

A client that observed n statistic vectors h_1..h_n (the rows of H, n x D) since its last confirmed
upload changed the packed Gram statistic ``head.gram`` by pack(HᵀH). When n D < D(D+1)/2
(n <= D // 2) it uploads instead a factor R (r x D, r <= n) with RᵀR = HᵀH, under the key
``head.gram::factor`` (float64); the server adds pack(RᵀR) where it would have added the packed change,
in the same partition order (:func:`fedcl.federation.aggregation.add_changes`). A round's replies
then hold factors, not 6.66 MB Gram matrices. Counts and class sums travel as before.

**The factor** is R = S Vᵀ from the thin SVD H = U S Vᵀ: its rows are sqrt(λ_i) v_iᵀ for the nonzero
eigenpairs (λ_i, v_i) of the Gram change HᵀH, in decreasing order, each row's largest entry made
positive; singular values below numerical rank tolerance are dropped (their rows are rounding noise).

**Privacy: R reveals no more than G = HᵀH**, except inside a repeated nonzero eigenvalue of G. R is a
function of G alone: the server, holding the packed G, would compute the same R from G's
eigendecomposition. Inside a repeated eigenvalue, though, the SVD's basis follows H (orthogonal samples
of equal norm are sent as they are, where G shows them only up to a rotation); continuous features
practically never have one, and ``federation.gram_factor=false`` sends the packed G. Every factor of G with r rows is
Q R for some orthogonal Q (r x r), and R is the one G itself fixes, so no information about the
individual rows H (the client's samples) travels beyond what the packed G carries. (QR's R, the
Cholesky-type factor of G, is equally a function of G when H's leading n x n block is invertible,
but features with all-zero columns, common after ReLU, break that: Householder QR's R may then
depend on H beyond G. The SVD form has no such case.)

**Where the packed form stays.** The factor path is for a server that adds each client's change in
the clear. A feature that must add *opaque* client values keeps the packed Gram: secure aggregation
(masked vectors must be added coordinate-wise; fedcl has none), DP noise on the statistics (central
DP refuses summed statistics: :func:`fedcl.federation.privacy.refuse_sums`), and robust aggregators
on sums (fedcl always adds sums exactly; ``federation.aggregation`` applies to averaged parameters
only). :func:`factors_allowed` is where such a feature turns the path off; the server tells
clients in each message (``gram-factor``), and clients send packed changes unless told 1.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedcl.federation.codec import FACTOR, BadUpdateError, read_array
from fedcl.heads.statistics import STATS_DTYPE, StatisticalHead, pack_upper

GRAM_KEY = "head.gram"
COUNTS_KEY = "head.counts"
CONFIG_KEY = "gram-factor"


def max_factor_rows(dim: int) -> int:
    """The most rows a factor may have: n D < D(D+1)/2, i.e. n <= D // 2 (beyond, packed G is smaller)."""
    return dim // 2


def factors_allowed(federation) -> bool:
    """Whether the server accepts factors (``federation.gram_factor``), and nothing adds opaque values to the
    sums: central DP (refused with summed statistics anyway) would need the packed form."""
    return bool(federation.gram_factor) and federation.dp_clipping_norm is None


def gram_dims(model) -> dict[str, int]:
    """{packed-Gram key: its dimension D} for the model's exchanged summed Gram statistic (empty if none)."""
    head = model.head
    if isinstance(head, StatisticalHead) and head.uses_gram and model.aggregation_kinds().get(GRAM_KEY) == "sum":
        return {GRAM_KEY: head.statistic_dim}
    return {}


def gram_factor(rows: torch.Tensor) -> torch.Tensor:
    """The canonical factor R (r x D, r <= n) of the Gram matrix of ``rows`` (n x D): RᵀR = rowsᵀrows (module doc)."""
    rows = rows.to(STATS_DTYPE)
    if rows.shape[0] == 0:
        return rows
    _, s, vh = torch.linalg.svd(rows, full_matrices=False)
    tolerance = float(s.max()) * max(rows.shape) * torch.finfo(STATS_DTYPE).eps
    keep = s > tolerance
    factor = s[keep].unsqueeze(1) * vh[keep]
    largest = factor.gather(1, factor.abs().argmax(1, keepdim=True))
    return factor * torch.where(largest < 0, -1.0, 1.0).to(factor.dtype)


def factor_gram(factors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """pack(Σ RᵢᵀRᵢ) over ``factors`` (float64), in their order, in blocks of about ``dim`` rows."""
    dense = torch.zeros(dim, dim, dtype=STATS_DTYPE)
    block: list[torch.Tensor] = []
    for i, factor in enumerate(factors):
        block.append(factor.to(STATS_DTYPE))
        if sum(map(len, block)) >= dim or i == len(factors) - 1:  # (one product per block: fewer passes over D x D)
            stacked = torch.cat(block)
            dense.addmm_(stacked.T, stacked)
            block = []
    return pack_upper(dense)


# ---------------------------------------------------------------------- client side
def record_gram_rows(model, config) -> None:
    """Start keeping the statistic vectors the head observes, when the server accepts factors."""
    dims = gram_dims(model)
    if dims and accepts_factors(config):
        model.head.record_rows(max_factor_rows(dims[GRAM_KEY]))


def accepts_factors(config) -> bool:
    """Whether the server's message says it takes factors."""
    return bool(int(config.get(CONFIG_KEY, 0)))


def gram_rows(model, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{GRAM_KEY: the rows observed since :func:`record_gram_rows`} when they are the whole Gram change
    relative to ``reference`` (as many rows as the counts grew by); else {} (not recorded, too many, or
    changed otherwise)."""
    rows = model.head.observed_rows() if gram_dims(model) else None
    if rows is None:
        return {}
    grown = model.head.counts.double().sum() - reference[COUNTS_KEY].to(model.head.counts).double().sum()
    return {GRAM_KEY: rows.detach().cpu().to(STATS_DTYPE)} if len(rows) == round(float(grown)) else {}


def attach_factors(record: ArrayRecord, factors: dict[str, torch.Tensor]) -> ArrayRecord:
    """``record`` with each factor under ``<key>::factor`` (float64, C order)."""
    for key, factor in factors.items():
        record[key + FACTOR] = Array(np.ascontiguousarray(factor.detach().cpu().to(STATS_DTYPE).numpy()))
    return record


# ---------------------------------------------------------------------- server side
def read_factors(record: ArrayRecord, dims: dict[str, int], source: str) -> dict[str, torch.Tensor]:
    """The reply's factors, validated (accepted key, not also sent packed, float64, shape (n, D) with
    1 <= n <= D // 2, finite); raises :class:`BadUpdateError`. Nothing is unpickled."""
    out = {}
    for name in record:
        if not name.endswith(FACTOR):
            continue
        key = name[: -len(FACTOR)]
        if key not in dims:
            raise BadUpdateError(f"{source}: unexpected factor '{name}' (factors accepted: {sorted(dims) or 'none'})")
        if key in record:
            raise BadUpdateError(f"{source}: '{key}' sent both packed and as a factor")
        out[key] = checked_factor(record[name], dims[key], f"{source}: factor of '{key}'")
    return out


def checked_factor(array: Array, dim: int, what: str) -> torch.Tensor:
    x = read_array(array, what)
    if x.dtype != np.float64:
        raise BadUpdateError(f"{what} has dtype {x.dtype}, expected float64")
    if x.ndim != 2 or x.shape[1] != dim or not 1 <= x.shape[0] <= max_factor_rows(dim):
        raise BadUpdateError(f"{what} has shape {tuple(x.shape)}, expected (n, {dim}) with 1 <= n <= {max_factor_rows(dim)}")
    t = torch.from_numpy(np.array(x))
    if not torch.isfinite(t).all() or not torch.isfinite(t.square().sum()):
        raise BadUpdateError(f"{what} holds NaN or infinite values (or its Gram matrix would)")
    return t
