"""Continual-learning metrics on an accuracy matrix R[i][j] = accuracy on task j after training task i."""

from __future__ import annotations

import resource
import sys

import numpy as np
import torch


def final_average_accuracy(matrix: np.ndarray) -> float:
    return float(np.mean(matrix[-1]))


def average_forgetting(matrix: np.ndarray) -> float:
    """Mean over tasks j < T-1 of max_{j<=i<T-1} R[i][j] - R[T-1][j]: the best accuracy on task j
    once it has been learned (rows before it do not count), minus the final one (0 for a single task)."""
    t = matrix.shape[0]
    if t < 2:
        return 0.0
    return float(np.mean([matrix[j : t - 1, j].max() - matrix[t - 1, j] for j in range(t - 1)]))


def average_incremental_accuracy(matrix: np.ndarray) -> float:
    """Mean over steps i of the mean accuracy on the tasks seen so far, R[i][0..i] (Rebuffi et al., 2017).
    A matrix with fewer rows than tasks (joint training: one row) averages each row over every task."""
    rows, cols = matrix.shape
    return float(np.mean([matrix[i, : i + 1 if rows == cols else cols].mean() for i in range(rows)]))


def backward_transfer(matrix: np.ndarray) -> float:
    """Mean over j < T-1 of R[T-1][j] - R[j][j] (negative means forgetting)."""
    t = matrix.shape[0]
    if t < 2:
        return 0.0
    return float(np.mean([matrix[t - 1, j] - matrix[j, j] for j in range(t - 1)]))


def forward_transfer(matrix: np.ndarray, initial: np.ndarray | None) -> float | None:
    """Mean over j > 0 of R[j-1][j] - b_j, b_j the untrained model's accuracy on task j.

    Only defined where a task can be solved before it is trained on (task- and
    domain-incremental); callers pass ``initial=None`` otherwise.
    """
    t = matrix.shape[0]
    if initial is None or t < 2:
        return None
    return float(np.mean([matrix[j - 1, j] - initial[j] for j in range(1, t)]))


def summarize(matrix: np.ndarray, initial: np.ndarray | None = None) -> dict[str, float | None]:
    return {
        "final_avg_accuracy": final_average_accuracy(matrix),
        "avg_incremental_accuracy": average_incremental_accuracy(matrix),
        "avg_forgetting": average_forgetting(matrix),
        "bwt": backward_transfer(matrix),
        "fwt": forward_transfer(matrix, initial),
    }


def count_parameters(params) -> tuple[int, int]:
    """(number of elements, bytes) of an iterable of tensors."""
    params = list(params)
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def peak_memory_mb(device: torch.device | None = None) -> dict[str, float]:
    """Peak resident memory of this process and, on CUDA, peak allocated GPU memory."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024
    out = {"peak_rss_mb": round(rss_mb, 1)}
    if device is not None and device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out
