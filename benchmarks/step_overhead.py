"""What deferring ``torch._dynamo`` costs an optimizer step: microseconds per ``ExecutionPlan.backward_step`` of a
3-value parameter with Adam (so the step is mostly overhead), with the deferral blocks in place or with
``torch._dynamo`` imported first (the blocks then change nothing).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/step_overhead.py [--loaded]

Prints the best of 3 repeats of 20,000 steps, in microseconds, and whether ``torch._dynamo`` was imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import timeit

import torch

from fedcl.config import TrainConfig
from fedcl.learner import create_optimizer
from fedcl.precision import plan_execution

STEPS, REPEATS = 20_000, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loaded", action="store_true", help="import torch._dynamo first")
    if parser.parse_args().loaded:
        importlib.import_module("torch._dynamo")
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = create_optimizer([{"params": [weight]}], TrainConfig(optimizer="adam", lr=0.01))
    plan = plan_execution(torch.device("cpu"))

    def step() -> None:
        plan.backward_step((weight * weight).sum(), optimizer, None)

    step()
    best = min(timeit.repeat(step, number=STEPS, repeat=REPEATS)) / STEPS
    print(f"{best * 1e6:.1f} us per step; torch._dynamo imported: {'torch._dynamo' in sys.modules}")


if __name__ == "__main__":
    main()
