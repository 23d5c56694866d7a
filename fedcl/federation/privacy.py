"""Central differential privacy: a wrapper around aggregation, with Flower's fixed-clipping semantics.

Each round, for the m clients *sampled* (replies that failed, timed out or were refused count as
a zero update, as in Flower's ``DifferentialPrivacyServerSideFixedClipping``):

    global <- global + (sum_i clip_C(mask_i * update_i) + N(0, (z C)^2 I)) / m

- ``mask_i`` keeps the rows and per-task parts client i trained (0/1 masks from its reply, not
  its sample counts), so an untrained row's incidental drift is not sent as an update;
- ``clip_C`` is Flower's flat clipping of the whole masked update to L2 norm C;
- the denominator m is the number sampled, the same number the noise is calibrated to
  (std z C / m on the mean), whatever fails.

**Class-aware weighting and the guarantee.** Class-aware weighting divides row c by the samples (or
clients) that trained class c. That count is a function of the clients' data and can be 1, which
would make the sensitivity of row c as large as C and make the noise depend on the label
distribution. fedcl therefore keeps the guarantee and gives up the weighting: under DP every row
and per-task part is a mean over the m sampled clients (0/1 masks only), so a row trained by n_c of
m clients moves by n_c/m of its class-aware mean. That is the price of the guarantee; rows nobody
trained still receive noise (whether a row was trained is itself data-dependent).

**Summed statistics** ('sum' keys, e.g. NCM class sums) are refused with one line: a Gaussian
mechanism on them needs a per-client bound on the statistics (counts and feature norms) that the
heads do not enforce yet (see issue 14's statistical heads).

**Accounting.** :func:`epsilons` composes, round by round, fixed-size sampling without replacement
of m of the N clients with the Gaussian mechanism (``dp-accounting``'s RDP accountant). Sampling a
fixed m and dividing by m needs N public, so the neighbouring relation is *replace one client*,
under which the clipped sum's L2 sensitivity is 2C: the accountant gets noise multiplier z / 2.
The noise is drawn from a generator seeded by (seed, round), so a resumed run draws the same noise.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

from fedcl.optional import require_accountant
from fedcl.errors import ConfigError
from fedcl.federation.aggregation import ClientUpdate, _row_weights, averaged_float_keys
from fedcl.federation.flower_adapter import clip_flat, gaussian_noise_std


def noise_std(noise_multiplier: float, clipping_norm: float, sampled_clients: int) -> float:
    """Std of the noise on the mean of ``sampled_clients`` clipped updates (Flower's z C / m)."""
    return gaussian_noise_std(noise_multiplier, clipping_norm, max(1, sampled_clients)) if noise_multiplier > 0 else 0.0


def refuse_sums(kinds: dict[str, str]) -> None:
    sums = sorted(k for k, kind in kinds.items() if kind == "sum")
    if sums:
        raise ConfigError(f"federation.dp_clipping_norm cannot protect summed statistics ({', '.join(sums[:3])}): "
                          "they are not averaged parameters; turn central DP off or use a head without 'sum' state")


def _masked_update(update: ClientUpdate, global_state: dict[str, torch.Tensor], kinds: dict[str, str], keys: list[str]) -> list[np.ndarray]:
    out = []
    for key in keys:
        g = global_state[key].double()
        delta = update.state[key].double() - g
        kind = kinds.get(key, "examples")
        by_row = kind == "class_rows" and delta.dim() > 0
        trained = (_row_weights(kind, update, delta.shape[0] if by_row else 1) > 0).double()
        delta = delta * (trained.view(-1, *([1] * (delta.dim() - 1))) if by_row else trained[0])
        out.append(delta.numpy().copy())
    return out


def private_mean(global_state: dict[str, torch.Tensor], updates: list[ClientUpdate], kinds: dict[str, str], sampled: int,
                 clipping_norm: float, noise_multiplier: float, seed: str) -> dict[str, torch.Tensor]:
    """The new global float parameters: the noisy mean of the clipped, masked updates over ``sampled`` clients."""
    keys = averaged_float_keys(global_state, kinds)
    total = [np.zeros(tuple(global_state[k].shape), dtype=np.float64) for k in keys]
    zeros = [np.zeros_like(t) for t in total]
    for update in updates:
        masked = _masked_update(update, global_state, kinds, keys)
        clip_flat(masked, zeros, clipping_norm)
        total = [t + m for t, m in zip(total, masked)]
    m = max(1, sampled)
    std = noise_std(noise_multiplier, clipping_norm, m)
    generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little") >> 1)
    out = dict(global_state)
    for key, t in zip(keys, total):
        noise = torch.randn(global_state[key].shape, generator=generator, dtype=torch.float64) * std
        out[key] = (global_state[key].double() + torch.from_numpy(t) / m + noise).to(global_state[key].dtype)
    return out


def epsilons(noise_multiplier: float, sampled_per_round: list[int], num_clients: int, delta: float) -> list[float | None]:
    """epsilon at ``delta`` after each round (composed from round 1), from dp-accounting's RDP accountant;
    None where no noise is added (no finite guarantee)."""
    if noise_multiplier <= 0:
        return [None] * len(sampled_per_round)
    dp_accounting = require_accountant()
    from dp_accounting.rdp import RdpAccountant

    logging.getLogger("absl").setLevel(logging.ERROR)  # (its convergence notes for low orders)
    accountant = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier / 2)  # replace-one: sensitivity 2C
    out = []
    for m in sampled_per_round:
        if m > 0:
            accountant.compose(dp_accounting.SampledWithoutReplacementDpEvent(num_clients, min(m, num_clients), gaussian))
        out.append(float(accountant.get_epsilon(delta)))
    return out
