import numpy as np
import pytest

from fedcl.metrics import average_forgetting, backward_transfer, final_average_accuracy, forward_transfer, summarize

# R[i][j]: accuracy on task j after training task i (hand-made).
R = np.array([
    [0.90, 0.10, 0.20],
    [0.70, 0.80, 0.30],
    [0.60, 0.50, 0.95],
])


def test_final_average_accuracy():
    assert final_average_accuracy(R) == pytest.approx((0.60 + 0.50 + 0.95) / 3)


def test_forgetting_uses_best_earlier_accuracy():
    # task 0: best 0.90 -> 0.60 (0.30); task 1: best 0.80 -> 0.50 (0.30)
    assert average_forgetting(R) == pytest.approx(0.30)


def test_backward_transfer():
    assert backward_transfer(R) == pytest.approx(((0.60 - 0.90) + (0.50 - 0.80)) / 2)


def test_forward_transfer_against_untrained_model():
    initial = np.array([0.5, 0.05, 0.25])
    assert forward_transfer(R, initial) == pytest.approx(((0.10 - 0.05) + (0.30 - 0.25)) / 2)
    assert forward_transfer(R, None) is None


def test_single_task_has_no_forgetting():
    s = summarize(np.array([[0.7]]))
    assert s["avg_forgetting"] == 0.0 and s["bwt"] == 0.0 and s["final_avg_accuracy"] == pytest.approx(0.7)


def test_forgetting_with_improvement_is_negative():
    m = np.array([[0.5, 0.0], [0.8, 0.9]])
    assert average_forgetting(m) == pytest.approx(-0.3)
    assert backward_transfer(m) == pytest.approx(0.3)
