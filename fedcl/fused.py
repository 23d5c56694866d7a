"""Fused execution of many simulated clients on one frozen backbone.

The backbone is frozen and in eval mode (BatchNorm uses its stored statistics), so every sample's
features depend only on that sample: the samples of K clients can share ONE backbone pass. Each client
keeps its own input transform, head and optimiser state, stored stacked (a leading client axis of size K)
and gathered per sample: ``torch.func.functional_call`` + ``vmap`` run the client's transform and head
on each sample with that client's parameters. Client k's loss is the mean over its own samples, and the
summed loss gives each client's parameters exactly the gradient of its own loss.

:class:`StackedAdam` is ``torch.optim.Adam`` (L2 weight decay, no AMSGrad) over the stacked parameters,
with one step count per client: a client's moments and parameters move only in steps where it had
samples, as if it trained alone. ``tests/test_fused.py`` checks that K clients trained fused end where
K clients trained one after another by :class:`fedcl.learner.Learner` end (to float tolerance).

Works for transforms and heads whose forward is per-sample tensor arithmetic (additive, linear, cosine);
not for per-task transforms (data-dependent branching) or heads that learn without gradients (NCM).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from fedcl.data.preprocessing import to_model_input

State = dict[str, torch.Tensor]


def stack_states(states: Sequence[Mapping[str, torch.Tensor]]) -> State:
    """K state dicts with equal keys and shapes -> one dict of (K, ...) leaf tensors that need gradients."""
    return {k: torch.stack([s[k].detach() for s in states]).clone().requires_grad_(True) for k in states[0]}


def client_state(stacked: Mapping[str, torch.Tensor], client: int) -> State:
    """Client ``client``'s own state dict (detached copies)."""
    return {k: v[client].detach().clone() for k, v in stacked.items()}


def per_sample_call(module: nn.Module, stacked: Mapping[str, torch.Tensor], client_ids: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``module`` applied to each sample with its client's parameters: gathered per sample, vmapped."""
    gathered = {k: v.index_select(0, client_ids) for k, v in stacked.items()}

    def one(params: State, x: torch.Tensor) -> torch.Tensor:
        return functional_call(module, params, (x.unsqueeze(0),)).squeeze(0)

    return vmap(one)(gathered, inputs)


class StackedAdam:
    """Adam over parameters with a leading client axis; only the clients marked active take a step."""

    def __init__(self, groups: Sequence[tuple[Sequence[torch.Tensor], float]], num_clients: int,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.groups = [(list(params), lr) for params, lr in groups]
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.steps = torch.zeros(num_clients, dtype=torch.float64, device=self.groups[0][0][0].device)
        self.moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for params, _ in self.groups for p in params}

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """Update the parameters of the clients in ``active`` (bool, one per client) from their ``.grad``."""
        b1, b2 = self.betas
        self.steps += active.to(self.steps.device, torch.float64)
        steps = self.steps.clamp(min=1)
        for params, lr in self.groups:
            for p in params:
                if p.grad is None:
                    continue
                m, v = self.moments[id(p)]
                shape = (-1,) + (1,) * (p.ndim - 1)
                on = active.to(p.device).view(shape)
                g = p.grad + self.weight_decay * p if self.weight_decay else p.grad
                m.copy_(torch.where(on, m * b1 + g * (1 - b1), m))
                v.copy_(torch.where(on, v * b2 + g * g * (1 - b2), v))
                bc1 = (1 - b1 ** steps).to(p.device, p.dtype).view(shape)
                bc2_sqrt = (1 - b2 ** steps).sqrt().to(p.device, p.dtype).view(shape)
                update = (lr / bc1) * m / (v.sqrt() / bc2_sqrt + self.eps)
                p.sub_(torch.where(on, update, torch.zeros_like(update)))

    def zero_grad(self) -> None:
        for params, _ in self.groups:
            for p in params:
                p.grad = None


class FusedClients:
    """K clients' transforms and heads (stacked) around one frozen backbone, trained in shared passes."""

    def __init__(self, transform: nn.Module, backbone: nn.Module, head: nn.Module, transform_states: Sequence[Mapping[str, torch.Tensor]],
                 head_states: Sequence[Mapping[str, torch.Tensor]], lr: float, head_lr: float, weight_decay: float = 0.0,
                 autocast: contextlib.AbstractContextManager | None = None) -> None:
        self.transform, self.backbone, self.head = transform, backbone.eval(), head
        self.transform_params = stack_states(transform_states)
        self.head_params = stack_states(head_states)
        self.num_clients = len(head_states)
        self.optimizer = StackedAdam([(self.transform_params.values(), lr), (self.head_params.values(), head_lr)], self.num_clients,
                                     weight_decay=weight_decay)
        self._autocast = autocast

    def autocast(self) -> contextlib.AbstractContextManager:
        return self._autocast if self._autocast is not None else contextlib.nullcontext()

    def logits(self, images: torch.Tensor, client_ids: torch.Tensor) -> torch.Tensor:
        """Images of any clients, (N, 3, S, S) in [0, 1] -> each sample's logits under its own client's model."""
        x = per_sample_call(self.transform, self.transform_params, client_ids, images)
        features = self.backbone(x)
        head_dtype = next(iter(self.head_params.values())).dtype  # fp32 under bf16/fp16 autocast; fp64 if the head is
        return per_sample_call(self.head, self.head_params, client_ids, features.to(head_dtype))

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, client_ids: torch.Tensor, class_masks: torch.Tensor) -> torch.Tensor:
        """One optimiser step for every client with samples in the batch; returns each client's mean loss (0 if absent).

        ``class_masks[k]`` marks the classes whose logits compete in client k's loss (the learner's ``train_mask``)."""
        with self.autocast():
            logits = self.logits(images, client_ids).float()
        logits = logits.masked_fill(~class_masks.index_select(0, client_ids), float("-inf"))
        per_sample = F.cross_entropy(logits, labels, reduction="none")
        counts = torch.bincount(client_ids, minlength=self.num_clients)
        losses = torch.zeros(self.num_clients, device=per_sample.device).index_add(0, client_ids, per_sample) / counts.clamp(min=1)
        self.optimizer.zero_grad()
        losses.sum().backward()
        self.optimizer.step(counts > 0)
        return losses.detach()

    def client_states(self, client: int) -> tuple[State, State]:
        """(transform state, head state) of one client."""
        return client_state(self.transform_params, client), client_state(self.head_params, client)


def _groups(batches: list[tuple[int, torch.Tensor]], max_samples: int | None) -> list[list[tuple[int, torch.Tensor]]]:
    """Whole clients' batches packed into passes of at most ``max_samples`` samples (a client never splits)."""
    groups: list[list[tuple[int, torch.Tensor]]] = [[]]
    size = 0
    for k, idx in batches:
        if groups[-1] and max_samples is not None and size + len(idx) > max_samples:
            groups.append([])
            size = 0
        groups[-1].append((k, idx))
        size += len(idx)
    return groups


def fused_epoch(fused: FusedClients, data: Sequence[tuple[torch.Tensor, torch.Tensor]], orders: Sequence[torch.Tensor], batch_size: int,
                image_size: int, class_masks: torch.Tensor, device: torch.device | str = "cpu", max_samples: int | None = None) -> int:
    """One pass over every client's data: step s trains batch s of every client that still has one.

    ``data[k]`` is client k's (uint8 images, labels); ``orders[k]`` its shuffled sample order (as its own
    learner would draw it). A step's clients share backbone passes of at most ``max_samples`` samples
    (None: one pass); each client still takes exactly one optimiser step. Returns the number of backbone passes."""
    passes = 0
    masks = class_masks.to(device)
    for s in range(max(math.ceil(len(order) / batch_size) for order in orders)):
        batches = [(k, order[s * batch_size : (s + 1) * batch_size]) for k, order in enumerate(orders)]
        for group in _groups([(k, idx) for k, idx in batches if len(idx)], max_samples):
            x = to_model_input(torch.cat([data[k][0][idx] for k, idx in group]), image_size, device)
            labels = torch.cat([data[k][1][idx] for k, idx in group]).to(device)
            ids = torch.cat([torch.full((len(idx),), k, dtype=torch.long) for k, idx in group]).to(device)
            fused.train_step(x, labels, ids, masks)
            passes += 1
    return passes
