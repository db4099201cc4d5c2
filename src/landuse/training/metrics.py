"""Loss and metrics for predicted land-use distributions (docs/architecture.md, method facts).

``y`` rows are class distributions (non-negative, summing to 1); predictions are ``softmax(logits)``.
Everything here expects **labelled rows only**: unlabelled regions (all-zero ``y`` rows) must be
masked out by the caller, or they would count as perfect KL and distort L1/cosine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["evaluate", "kl_loss", "per_class_errors"]


def kl_loss(logits: Tensor, y: Tensor) -> Tensor:
    """KL(y ‖ softmax(logits)) averaged over rows: logits [N, C], y [N, C] → scalar."""
    return F.kl_div(F.log_softmax(logits, dim=-1), y, reduction="batchmean")


@torch.no_grad()
def evaluate(logits: Tensor, y: Tensor) -> dict[str, float]:
    """Metrics of softmax(logits) [N, C] against y [N, C] (labelled rows only).

    Keys: ``kl`` (batchmean KL(y ‖ ŷ)); ``l1_mean`` (mean |ŷ − y| over all N×C entries, the paper's
    L1); ``l1_sum`` (per-region sum of |ŷ − y| over classes, averaged over regions: HGI/RegionDCL's
    L1, = C × l1_mean); ``cosine`` (mean row-wise cosine similarity of ŷ and y).
    """
    if logits.shape != y.shape or logits.dim() != 2 or len(y) == 0:
        raise ValueError(
            f"evaluate needs logits and y of the same non-empty [N, C] shape, got {tuple(logits.shape)} and {tuple(y.shape)}"
        )
    logits, y = logits.detach().float(), y.detach().float()
    pred = torch.softmax(logits, dim=-1)
    err = (pred - y).abs()
    return {
        "kl": float(kl_loss(logits, y)),
        "l1_mean": float(err.mean()),
        "l1_sum": float(err.sum(dim=1).mean()),
        "cosine": float(F.cosine_similarity(pred, y, dim=1).mean()),
    }


def per_class_errors(pred: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """The thesis's per-class table for predicted pred [N, C] and true y [N, C] distributions.

    One row per class (index ``class``) with ``true_share`` (mean true share), ``pred_share`` (mean
    predicted share), ``mae`` (mean absolute error) and ``relative_error`` = mae / true_share (NaN
    where the class never occurs, true_share == 0).
    """
    pred, y = np.asarray(pred, dtype=float), np.asarray(y, dtype=float)
    if pred.shape != y.shape or pred.ndim != 2 or pred.shape[1] != len(classes):
        raise ValueError(
            f"per_class_errors needs pred and y of shape [N, {len(classes)}], got {pred.shape} and {y.shape}"
        )
    true_share = y.mean(axis=0)
    mae = np.abs(pred - y).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(true_share > 0, mae / np.where(true_share > 0, true_share, 1.0), np.nan)
    return pd.DataFrame(
        {"true_share": true_share, "pred_share": pred.mean(axis=0), "mae": mae, "relative_error": relative},
        index=pd.Index(list(classes), name="class"),
    )
