"""scikit-learn's `make_classification` and `make_multilabel_classification`, as the synthetic sets call
them, without importing scikit-learn: that import costs ~0.7 s on 2 CPU cores, paid by every run on a
synthetic set and by each worker process of a sweep. The same draws, in the same order, from the same
`numpy.random.RandomState` give the same arrays (tests/test_data.py holds both to scikit-learn's own
over a range of sizes, class counts and weights)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLIP_Y = 0.0  # make_classification's label flips, off: the synthetic sets add their own `label_noise`


def gaussian_clusters(
    n_samples: int, n_features: int, n_informative: int, n_classes: int, weights: Sequence[float] | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`make_classification(n_samples, n_features, n_informative=n_informative, n_redundant=0,
    n_classes=n_classes, n_clusters_per_class=1, weights=weights, flip_y=0.0, random_state=seed)`: one
    Gaussian cluster per class on a vertex of the informative features' hypercube, random covariance,
    the other features noise, samples and features shuffled."""
    generator = np.random.RandomState(seed)
    if weights is None:
        shares = [1.0 / n_classes] * n_classes
    else:
        shares = [*weights, 1.0 - sum(weights)] if len(weights) == n_classes - 1 else list(weights)
    per_class = [int(n_samples * shares[k]) for k in range(n_classes)]
    for i in range(n_samples - sum(per_class)):
        per_class[i % n_classes] += 1
    features = np.zeros((n_samples, n_features))
    labels = np.zeros(n_samples, dtype=int)
    centroids = _hypercube(n_classes, n_informative, generator).astype(float, copy=False)
    centroids *= 2.0
    centroids -= 1.0
    features[:, :n_informative] = generator.standard_normal(size=(n_samples, n_informative))
    stop = 0
    for k, centroid in enumerate(centroids):
        start, stop = stop, stop + per_class[k]
        labels[start:stop] = k
        cluster = features[start:stop, :n_informative]
        covariance = 2 * generator.uniform(size=(n_informative, n_informative)) - 1
        cluster[...] = np.dot(cluster, covariance)
        cluster += centroid
    noise = n_features - n_informative
    if noise > 0:
        features[:, -noise:] = generator.standard_normal(size=(n_samples, noise))
    flipped = generator.uniform(size=n_samples) < FLIP_Y  # drawn even at 0: the later draws follow it
    labels[flipped] = generator.randint(n_classes, size=int(flipped.sum()))
    order = np.arange(n_samples)
    generator.shuffle(order)
    features, labels = features[order], labels[order]
    columns = np.arange(n_features)
    generator.shuffle(columns)
    features[:, :] = features[:, columns]
    return features, labels


def _hypercube(samples: int, dimensions: int, generator: np.random.RandomState) -> np.ndarray:
    """`samples` distinct vertices of the unit hypercube in `dimensions` dimensions, as 0/1 rows."""
    if dimensions > 30:
        return np.hstack([generator.randint(2, size=(samples, dimensions - 30)), _hypercube(samples, 30, generator)])
    vertices = _without_replacement(2**dimensions, samples, generator).astype(">u4", copy=False)
    return np.unpackbits(vertices.view(">u1")).reshape((-1, 32))[:, -dimensions:]


def _without_replacement(population: int, samples: int, generator: np.random.RandomState) -> np.ndarray:
    """`samples` distinct integers in [0, population), by the method scikit-learn's
    `sample_without_replacement(method="auto")` picks for their ratio."""
    ratio = samples / population
    if 0.01 < ratio < 0.99:
        return generator.permutation(population)[:samples]
    drawn: list[int] = []
    if ratio < 0.2:  # draw again until unseen
        seen: set[int] = set()
        for _ in range(samples):
            j = generator.randint(population)
            while j in seen:
                j = generator.randint(population)
            seen.add(j)
            drawn.append(j)
    else:  # reservoir sampling
        drawn = list(range(samples))
        for i in range(samples, population):
            j = generator.randint(0, i + 1)
            if j < samples:
                drawn[j] = i
    return np.asarray(drawn, dtype=np.intp)


def word_counts(
    n_samples: int, n_features: int, n_classes: int, n_labels: int, seed: int, length: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """`make_multilabel_classification(n_samples, n_features, n_classes=n_classes, n_labels=n_labels,
    length=length, random_state=seed)`: each sample a bag of words (feature counts) drawn from its labels'
    word distributions; a Poisson number of labels (none allowed), a Poisson number of words (at least one)."""
    generator = np.random.RandomState(seed)
    class_p = generator.uniform(size=n_classes)
    class_p /= class_p.sum()
    class_cumulative = np.cumsum(class_p)
    word_p = generator.uniform(size=(n_features, n_classes))
    word_p /= np.sum(word_p, axis=0)
    features = np.zeros((n_samples, n_features))
    labels = np.zeros((n_samples, n_classes), dtype=int)
    for i in range(n_samples):
        size = n_classes + 1
        while size > n_classes:
            size = generator.poisson(n_labels)
        chosen: set[int] = set()  # a set, as scikit-learn's: its order sets the order of the sum below
        while len(chosen) != size:
            chosen.update(np.searchsorted(class_cumulative, generator.uniform(size=size - len(chosen))))
        classes = list(chosen)
        n_words = 0
        while n_words == 0:
            n_words = generator.poisson(length)
        if not classes:
            words = generator.randint(n_features, size=n_words)
        else:
            cumulative = word_p.take(classes, axis=1).sum(axis=1).cumsum()
            cumulative /= cumulative[-1]
            words = np.searchsorted(cumulative, generator.uniform(size=n_words))
        features[i] = np.bincount(words, minlength=n_features)
        labels[i, classes] = 1
    return features, labels
