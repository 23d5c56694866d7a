"""Fused clients (one backbone pass, stacked per-client parameters) end where clients trained one
after another by the real learner end: additive transform + linear head, Adam.

Everything runs in float64: Adam's first steps are about lr * sign(gradient), so in float32 a gradient
component that is zero up to rounding (samples cancelling) flips sign between two summation orders (the
fused per-sample gather vs the learner's broadcast; it depends on torch's thread count) and moves that
parameter by ~lr (seen: 1.4e-3 with 1 thread). In float64 the two agree to ~1e-15, so 1e-5 is a real test."""

import copy

import pytest
import torch

from fedcl.config import build_config
from fedcl.data.scenarios import Experience
from fedcl.builder import make_benchmark, make_learner, make_method, make_model
from fedcl.fused import FusedClients, StackedAdam, fused_epoch

SIZES = (11, 7, 3)  # unequal: with batch 4 the clients take 3, 2 and 1 steps per epoch
EPOCHS = 2  # client 2 trains again after idle steps (its Adam step count must not advance meanwhile)
MAX_SAMPLES = 8  # step 0: clients 0 and 1 share a backbone pass, client 2 gets its own
OVERRIDES = ["data.num_tasks=2", "data.max_train_per_class=20", "data.image_size=16", f"train.epochs={EPOCHS}", "train.batch_size=4",
             "model.transform.name=additive", "model.head.name=linear", "method.name=input_tuning", "train.device=cpu", "train.precision=fp32"]


def client_experiences(benchmark):
    first = benchmark.train_stream[0]
    order = torch.randperm(len(first), generator=torch.Generator().manual_seed(1))
    out, start = [], 0
    for n in SIZES:
        out.append(Experience(first.task_id, first.classes, first.data.subset(order[start : start + n])))
        start += n
    return out


def initial_models(cfg, benchmark, lite0):
    """One float64 model per client, each from a different starting point (so a wrong gather shows)."""
    models = []
    for k in range(len(SIZES)):
        model = make_model(cfg, benchmark, make_method(cfg), backbone=copy.deepcopy(lite0)).double()
        gen = torch.Generator().manual_seed(100 + k)
        with torch.no_grad():
            for p in [*model.transform.parameters(), *model.head.parameters()]:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        models.append(model)
    return models


def sequential(cfg, benchmark, models, experiences):
    """Each client alone, in fedcl's training loop (learner seed = 10 + client)."""
    for k, (model, experience) in enumerate(zip(models, experiences)):
        client_cfg = copy.deepcopy(cfg)
        client_cfg.seed = 10 + k
        make_learner(client_cfg, model, make_method(cfg), benchmark, torch.device("cpu")).train_experience(experience)
    return [(m.transform.state_dict(), m.head.state_dict()) for m in models]


def fused(cfg, models, experiences, lite0, break_gather=False):
    """All clients in shared backbone passes, drawing the same shuffles as their learners."""
    template = models[0]
    clients = FusedClients(template.transform, copy.deepcopy(lite0), template.head, [m.transform.state_dict() for m in models],
                           [m.head.state_dict() for m in models], lr=cfg.train.lr, head_lr=cfg.train.head_lr)
    if break_gather:  # client 0 and 1 swap parameters
        for params in (clients.transform_params, clients.head_params):
            for v in params.values():
                with torch.no_grad():
                    v[[0, 1]] = v[[1, 0]]
    masks = torch.zeros(len(models), template.head.num_classes, dtype=torch.bool)
    for k, e in enumerate(experiences):
        masks[k, e.classes] = True
    gens = [torch.Generator().manual_seed(10 + k) for k in range(len(models))]
    data = [(e.data.images, e.data.labels) for e in experiences]
    for _ in range(EPOCHS):
        orders = [torch.randperm(len(e), generator=g) for e, g in zip(experiences, gens)]
        fused_epoch(clients, data, orders, cfg.train.batch_size, cfg.data.image_size, masks, max_samples=MAX_SAMPLES)
    return [clients.client_states(k) for k in range(len(models))]


@pytest.fixture(scope="module")
def lite0_f64(lite0):
    return copy.deepcopy(lite0).double()


@pytest.fixture(scope="module")
def setting(lite0_f64):
    cfg = build_config("smoke", None, OVERRIDES)
    benchmark = make_benchmark(cfg)
    experiences = client_experiences(benchmark)
    expected = sequential(cfg, benchmark, initial_models(cfg, benchmark, lite0_f64), experiences)
    return cfg, benchmark, experiences, expected


def max_difference(a, b):
    return max(float((a[i][k] - b[i][k]).abs().max()) for i in range(2) for k in a[i])


@pytest.mark.integration
def test_fused_clients_match_sequential_clients(setting, lite0_f64):
    cfg, benchmark, experiences, expected = setting
    models = initial_models(cfg, benchmark, lite0_f64)
    starts = [(copy.deepcopy(m.transform.state_dict()), copy.deepcopy(m.head.state_dict())) for m in models]
    got = fused(cfg, models, experiences, lite0_f64)
    for k, (exp, res, start) in enumerate(zip(expected, got, starts)):
        assert max_difference(exp, start) > 1e-3, f"client {k} did not train"
        assert max_difference(exp, res) < 1e-5, f"client {k}: fused and sequential differ by {max_difference(exp, res)}"


@pytest.mark.integration
def test_a_wrong_gather_is_detected(setting, lite0_f64):
    cfg, benchmark, experiences, expected = setting
    got = fused(cfg, initial_models(cfg, benchmark, lite0_f64), experiences, lite0_f64, break_gather=True)
    assert max_difference(expected[0], got[0]) > 1e-3


def test_stacked_adam_is_torch_adam_for_active_clients_only():
    torch.manual_seed(0)
    p = torch.randn(3, 4, requires_grad=True)
    alone = [p[k].detach().clone().requires_grad_(True) for k in range(3)]
    opts = [torch.optim.Adam([a], lr=0.1, weight_decay=0.01) for a in alone]
    stacked = StackedAdam([([p], 0.1)], 3, weight_decay=0.01)
    for step in range(4):
        grads = torch.randn(3, 4)
        active = torch.tensor([True, step % 2 == 0, step == 3])
        p.grad = grads * active.unsqueeze(1)
        stacked.step(active)
        for k in range(3):
            if active[k]:
                alone[k].grad = grads[k].clone()
                opts[k].step()
    assert torch.allclose(p.detach(), torch.stack([a.detach() for a in alone]), atol=1e-6)


def test_stacked_adam_keeps_its_step_counts_on_the_parameters_device():
    """On a GPU the clients' active mask lives on the GPU; the step counts must too (the first GPU run failed with
    'cuda:0 and cpu'). The meta device stands in for a second device on a CPU-only machine."""
    p = torch.zeros(3, 4, device="meta", requires_grad=True)
    p.grad = torch.zeros(3, 4, device="meta")
    stacked = StackedAdam([([p], 0.1)], 3)
    stacked.step(torch.tensor([True, False, True], device="meta"))
    assert stacked.steps.device.type == "meta"
