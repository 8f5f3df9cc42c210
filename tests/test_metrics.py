import numpy as np
import pytest
import torch

from fstag.evaluate.metrics import arithmetic_mean, geometric_mean, map_at_3, map_at_3_torch, top1_accuracy


def test_map3_hand_computed():
    probs = np.array([
        [0.5, 0.3, 0.1, 0.1],   # true 0 at rank 1 -> 1
        [0.5, 0.3, 0.15, 0.05], # true 1 at rank 2 -> 1/2
        [0.5, 0.3, 0.15, 0.05], # true 2 at rank 3 -> 1/3
        [0.5, 0.3, 0.15, 0.05], # true 3 at rank 4 -> 0
    ])
    targets = np.array([0, 1, 2, 3])
    assert map_at_3(probs, targets) == pytest.approx((1 + 0.5 + 1 / 3 + 0) / 4)
    assert float(map_at_3_torch(torch.tensor(probs), torch.tensor(targets))) == pytest.approx((1 + 0.5 + 1 / 3) / 4)
    assert top1_accuracy(probs, targets) == 0.25


def test_geometric_mean_hand_computed():
    a = np.array([[0.5, 0.25, 0.25]])
    b = np.array([[0.125, 0.5, 0.375]])
    g = np.sqrt(a * b)  # [0.25, 0.35355, 0.30619]
    expected = g / g.sum()
    np.testing.assert_allclose(geometric_mean(np.stack([a, b])), expected, rtol=1e-9)
    # weights: all weight on b gives b
    np.testing.assert_allclose(geometric_mean(np.stack([a, b]), weights=[0, 1]), b, rtol=1e-9)
    np.testing.assert_allclose(arithmetic_mean(np.stack([a, b])), (a + b) / 2, rtol=1e-12)
    with pytest.raises(ValueError):
        geometric_mean(np.stack([a, b]), weights=[1, -1])
