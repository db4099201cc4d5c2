"""Loss and metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landuse.training.metrics import evaluate, kl_loss, per_class_errors


def test_evaluate_two_rows_by_hand():
    y = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))  # softmax gives exactly these
    m = evaluate(logits, y)
    kl = (1 * math.log(1 / 0.5) + 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)) / 2
    assert m["kl"] == pytest.approx(kl, rel=1e-5)
    assert m["l1_mean"] == pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4, rel=1e-5)
    assert m["l1_sum"] == pytest.approx((1.0 + 0.5) / 2, rel=1e-5)
    cos = (0.5 / math.sqrt(0.5) + (0.125 + 0.375) / (math.sqrt(0.5) * math.sqrt(0.625))) / 2
    assert m["cosine"] == pytest.approx(cos, rel=1e-5)
    assert set(m) == {"kl", "l1_mean", "l1_sum", "cosine"} and all(isinstance(v, float) for v in m.values())


def test_l1_sum_is_c_times_l1_mean_and_kl_properties():
    g = torch.Generator().manual_seed(0)
    logits, c = torch.randn(50, 8, generator=g), 8
    y = torch.softmax(torch.randn(50, c, generator=g), -1)
    m = evaluate(logits, y)
    assert m["l1_sum"] == pytest.approx(c * m["l1_mean"], rel=1e-5)
    assert kl_loss(logits, y).item() >= 0 and m["kl"] == pytest.approx(kl_loss(logits, y).item())
    assert kl_loss(logits, torch.softmax(logits, -1)).item() == pytest.approx(0.0, abs=1e-6)
    perfect = evaluate(logits, torch.softmax(logits, -1))
    assert perfect["l1_mean"] == pytest.approx(0, abs=1e-6) and perfect["cosine"] == pytest.approx(1, rel=1e-5)


def test_kl_loss_has_gradients_and_evaluate_rejects_bad_shapes():
    logits = torch.randn(4, 3, requires_grad=True)
    kl_loss(logits, torch.full((4, 3), 1 / 3)).backward()
    assert logits.grad is not None
    with pytest.raises(ValueError):
        evaluate(torch.randn(4, 3), torch.rand(4, 2))
    with pytest.raises(ValueError):
        evaluate(torch.randn(0, 3), torch.rand(0, 3))


def test_per_class_errors_by_hand():
    y = np.array([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0]])
    pred = np.array([[0.5, 0.4, 0.1], [0.4, 0.5, 0.1]])
    table = per_class_errors(pred, y, ["commercial", "residential", "industrial"])
    assert list(table.index) == ["commercial", "residential", "industrial"] and table.index.name == "class"
    np.testing.assert_allclose(table["true_share"], [0.4, 0.6, 0.0])
    np.testing.assert_allclose(table["pred_share"], [0.45, 0.45, 0.1])
    np.testing.assert_allclose(table["mae"], [0.15, 0.15, 0.1])
    np.testing.assert_allclose(table["relative_error"][:2], [0.375, 0.25])
    assert math.isnan(table.loc["industrial", "relative_error"])  # absent class: NaN, no warning
    with pytest.raises(ValueError):
        per_class_errors(pred, y, ["a", "b"])
