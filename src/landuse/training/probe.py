"""Linear probes: how much land-use information a region representation carries."""

from __future__ import annotations

import numpy as np


def dominant_class_probe(vectors: np.ndarray, y: np.ndarray, seed: int = 0, test_size: float = 0.3) -> tuple[float, int]:
    """Balanced accuracy of a linear classifier predicting each region's dominant class, on held-out regions.

    ``vectors`` [N, d] and label distributions ``y`` [N, C] of labelled regions. Logistic regression
    on standardised features (class-balanced weights), a stratified split of regions (classes with a
    single region are kept in training only). Returns (balanced accuracy, number of classes present);
    chance is 1 / classes present.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    target = np.asarray(y).argmax(1)
    classes, counts = np.unique(target, return_counts=True)
    common = np.isin(target, classes[counts >= 2])
    x_tr, x_te, y_tr, y_te = train_test_split(
        vectors[common], target[common], test_size=test_size, random_state=seed, stratify=target[common]
    )
    x_tr = np.vstack([x_tr, vectors[~common]])
    y_tr = np.concatenate([y_tr, target[~common]])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    model.fit(x_tr, y_tr)
    return float(balanced_accuracy_score(y_te, model.predict(x_te))), int(len(np.unique(y_te)))
