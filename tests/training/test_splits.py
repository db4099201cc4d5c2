"""Random and spatially blocked splits: disjoint, covering, sized, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from landuse.training.splits import blocked_splits, random_splits

IDX = np.arange(1000, 1200)[::2] * 3  # 100 arbitrary labelled node indices


def check_partition(splits, idx):
    for train, val, test in splits:
        assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
        assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.sort(idx))


def test_random_splits():
    splits = random_splits(IDX, 5, 0.6, 0.1, seed=7)
    assert len(splits) == 5
    check_partition(splits, IDX)
    assert all((len(tr), len(va), len(te)) == (60, 10, 30) for tr, va, te in splits)
    again = random_splits(IDX, 7, 0.6, 0.1, seed=7)
    assert all(np.array_equal(a, b) for s, t in zip(splits, again) for a, b in zip(s, t))  # same per seed, k-stable
    assert not np.array_equal(splits[0][0], splits[1][0])
    assert not np.array_equal(splits[0][0], random_splits(IDX, 1, 0.6, 0.1, seed=8)[0][0])
    (tr, va, te), = random_splits(IDX, 1, 0.7, 0.0, seed=0)
    assert (len(tr), len(va), len(te)) == (70, 0, 30)


def test_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        random_splits(IDX, 1, 0.8, 0.3, seed=0)
    with pytest.raises(ValueError, match="fractions"):
        blocked_splits(IDX, np.zeros((len(IDX), 2)), 100.0, 1, 0.0, 0.1, seed=0)


def test_blocked_splits():
    rng = np.random.default_rng(0)
    idx = np.arange(2000)
    xy = rng.uniform(0, 10_000, (len(idx), 2))  # 10 km × 10 km, 1 km blocks → 100 blocks
    splits = blocked_splits(idx, xy, 1000.0, 4, 0.6, 0.2, seed=3)
    check_partition(splits, idx)
    block = [tuple(b) for b in np.floor(xy / 1000.0).astype(int)]
    for parts in splits:
        owner: dict[tuple[int, int], int] = {}
        for j, part in enumerate(parts):
            for i in part:
                assert owner.setdefault(block[i], j) == j  # a block never straddles two splits
        sizes = np.array([len(p) for p in parts]) / len(idx)
        np.testing.assert_allclose(sizes, [0.6, 0.2, 0.2], atol=0.03)
    again = blocked_splits(idx, xy, 1000.0, 4, 0.6, 0.2, seed=3)
    assert all(np.array_equal(a, b) for s, t in zip(splits, again) for a, b in zip(s, t))
    assert not np.array_equal(splits[0][0], splits[1][0])
    (tr, va, te), = blocked_splits(idx, xy, 1000.0, 1, 0.7, 0.0, seed=0)
    assert len(va) == 0 and len(tr) + len(te) == len(idx)


def test_blocked_splits_validates_xy():
    with pytest.raises(ValueError, match="xy"):
        blocked_splits(IDX, np.zeros((3, 2)), 100.0, 1, 0.6, 0.1, seed=0)
