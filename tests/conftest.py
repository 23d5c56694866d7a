"""Shared fixtures. Every test runs offline: hub look-ups fail fast instead of retrying."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def lite0():
    """The default backbone with its packaged ImageNet weights (built once per session)."""
    from fedcl.backbones import create_backbone

    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def fmnist():
    from fedcl.data import load_dataset

    return load_dataset("fashion_mnist")
