"""Train/validation/test node splits: repeated random splits and spatially blocked splits.

Each function returns ``k`` splits as ``(train, val, test)`` arrays of node indices drawn from the
given (labelled) indices: disjoint, together covering them, each sorted. Split ``i`` depends only on
``(seed, i)``, so the first splits do not change when ``k`` grows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["blocked_splits", "nested_splits", "random_splits"]

Split = tuple[np.ndarray, np.ndarray, np.ndarray]


def _check_fractions(train: float, val: float) -> None:
    if not (0 < train <= 1 and 0 <= val < 1 and train + val <= 1):
        raise ValueError(
            f"split fractions need 0 < train, 0 <= val and train + val <= 1 (got train={train}, val={val})"
        )


def random_splits(n_labelled_idx: np.ndarray, k: int, train: float, val: float, seed: int) -> list[Split]:
    """k random splits of ``n_labelled_idx``: round(train·n) train nodes, round(val·n) val, the rest test."""
    _check_fractions(train, val)
    idx = np.asarray(n_labelled_idx)
    n = len(idx)
    n_train, n_val = round(train * n), round(val * n)
    n_val = min(n_val, n - n_train)
    out = []
    for i in range(k):
        perm = np.random.default_rng([seed, i]).permutation(idx)
        cut = n_train + n_val
        out.append((np.sort(perm[:n_train]), np.sort(perm[n_train:cut]), np.sort(perm[cut:])))
    return out


def blocked_splits(
    idx: np.ndarray, xy: np.ndarray, block_m: float, k: int, train: float, val: float, seed: int
) -> list[Split]:
    """k spatially blocked splits of ``idx`` (centroids ``xy`` [len(idx), 2], projected metres).

    Nodes are grouped into square blocks of side ``block_m``; the blocks are shuffled and laid end to
    end, and each whole block goes to the split (train, val, test) whose share of the node count holds
    the block's midpoint. Fractions are therefore met to within about half a block, and no block ever
    straddles two splits (which limits spatial leakage between training and test nodes).
    """
    _check_fractions(train, val)
    if block_m <= 0:
        raise ValueError(f"block_m must be > 0, got {block_m}")
    idx, xy = np.asarray(idx), np.asarray(xy, dtype=float)
    if xy.shape != (len(idx), 2):
        raise ValueError(f"xy must have shape [{len(idx)}, 2], got {xy.shape}")
    _, block = np.unique(np.floor(xy / block_m).astype(np.int64), axis=0, return_inverse=True)
    block = block.ravel()
    sizes = np.bincount(block)
    cuts = np.array([train, train + val]) * len(idx)
    out: list[Split] = []
    for i in range(k):
        order = np.random.default_rng([seed, i]).permutation(len(sizes))
        mid = np.cumsum(sizes[order]) - sizes[order] / 2  # midpoint of each block along the shuffled line
        part = np.empty(len(sizes), dtype=np.int64)
        part[order] = np.searchsorted(cuts, mid, side="right")  # 0 train, 1 val, 2 test
        node_part = part[block]
        tr, va, te = (np.sort(idx[node_part == j]) for j in range(3))
        out.append((tr, va, te))
    return out


def nested_splits(idx: np.ndarray, k: int, test: float, val_of_rest: float, seed: int) -> list[Split]:
    """k random splits: round(test·n) test nodes, then round(val_of_rest·rest) validation, the rest train.

    The region-embedding land-use protocol's repeats (test 20 %, validation 20 % of the rest).
    """
    if not (0 < test < 1 and 0 <= val_of_rest < 1):
        raise ValueError(f"nested_splits needs 0 < test < 1 and 0 <= val_of_rest < 1 (got {test}, {val_of_rest})")
    idx = np.asarray(idx)
    n_test = round(test * len(idx))
    n_val = round(val_of_rest * (len(idx) - n_test))
    out = []
    for i in range(k):
        perm = np.random.default_rng([seed, i]).permutation(idx)
        te, va, tr = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
        out.append((np.sort(tr), np.sort(va), np.sort(te)))
    return out
