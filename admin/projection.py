"""Embedding geometry for the playground (pure Python): cosine similarities, a 2D PCA, set separation.

PCA works on the n x n matrix of cosine similarities instead of the d x d covariance: for unit
vectors that matrix is their Gram matrix, and double-centring it gives the Gram matrix of the centred
vectors, whose top eigenvectors scaled by sqrt(eigenvalue) are the principal-component scores. With
n = 150 texts and d = 3,072 dimensions that is one pass of dot products (shared with the similarity
table) and a small eigenproblem, solved by orthogonal (subspace) power iteration, no numpy needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import mul

Matrix = list[list[float]]


@dataclass(frozen=True)
class Projection:
    points: list[tuple[float, float]]  # one (x, y) per text, in the order given
    explained: tuple[float, float]  # share of the total variance along each axis, 0..1


@dataclass(frozen=True)
class Separation:
    """How well the sets stay apart: silhouette in [-1, 1] (None for fewer than two sets)."""

    silhouette: float | None
    within: float | None  # mean cosine similarity of two texts of the same set
    between: float | None  # ... of two texts of different sets


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(map(mul, a, b))


def unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(_dot(vector, vector))
    return [v / norm for v in vector] if norm else [0.0] * len(vector)


def cosine_matrix(vectors: Sequence[Sequence[float]]) -> Matrix:
    """Pairwise cosine similarities (symmetric, 1 on the diagonal except for zero vectors)."""
    units = [unit(v) for v in vectors]
    n = len(units)
    sim = [[0.0] * n for _ in range(n)]
    for i in range(n):
        ui = units[i]
        sim[i][i] = _dot(ui, ui)
        for j in range(i + 1, n):
            sim[i][j] = sim[j][i] = _dot(ui, units[j])
    return sim


def _double_centre(gram: Matrix) -> Matrix:
    n = len(gram)
    means = [sum(row) / n for row in gram]
    total = sum(means) / n
    return [[g - means[i] - means[j] + total for j, g in enumerate(row)] for i, row in enumerate(gram)]


def _orthonormal(a: list[float], b: list[float]) -> tuple[list[float], list[float]]:
    """Gram-Schmidt on two vectors; a vector with nothing left becomes zero."""
    a = unit(a)
    k = _dot(a, b)
    return a, unit([y - k * x for x, y in zip(a, b, strict=True)])


def _eigen_2x2(p: float, q: float, r: float) -> tuple[float, float, float, float]:
    """Eigen-decomposition of [[p, q], [q, r]]: (larger value, smaller value, cos, sin of the rotation)."""
    half_diff = (p - r) / 2
    root = math.hypot(half_diff, q)
    mean = (p + r) / 2
    angle = 0.5 * math.atan2(2 * q, p - r)
    return mean + root, mean - root, math.cos(angle), math.sin(angle)


def pca_2d(gram: Matrix, *, iterations: int = 300, tol: float = 1e-10) -> Projection:
    """The first two principal-component scores of texts whose unit vectors have Gram matrix `gram`."""
    n = len(gram)
    if n == 0:
        return Projection([], (0.0, 0.0))
    m = _double_centre(gram)
    trace = sum(m[i][i] for i in range(n))
    # deterministic, irregular start vectors: a symmetric start could sit orthogonal to the answer
    v1, v2 = _orthonormal([math.sin(i + 1.0) for i in range(n)], [math.cos(3.0 * i + 2.0) for i in range(n)])
    values = (0.0, 0.0)
    for _ in range(iterations):
        w1 = [_dot(row, v1) for row in m]
        w2 = [_dot(row, v2) for row in m]
        # Rayleigh-Ritz on the 2D subspace: rotate (v1, v2) into eigenvectors of its 2x2 restriction
        big, small, c, s = _eigen_2x2(_dot(v1, w1), _dot(v1, w2), _dot(v2, w2))
        v1, v2 = _orthonormal(
            [c * x + s * y for x, y in zip(w1, w2, strict=True)],
            [-s * x + c * y for x, y in zip(w1, w2, strict=True)],
        )
        done = abs(big - values[0]) <= tol * (abs(big) + tol) and abs(small - values[1]) <= tol * (
            abs(small) + tol
        )
        values = (big, small)
        if done:
            break
    axes = []
    for vec, value in ((v1, values[0]), (v2, values[1])):
        scale = math.sqrt(max(value, 0.0))
        sign = -1.0 if vec and -min(vec) > max(vec) else 1.0  # the largest score points right / up
        axes.append([sign * scale * x for x in vec])
    explained = tuple(max(v, 0.0) / trace if trace > 1e-12 else 0.0 for v in values)
    return Projection(list(zip(axes[0], axes[1], strict=True)), (explained[0], explained[1]))


def separation(sim: Matrix, groups: Sequence[int]) -> Separation:
    """Silhouette (cosine distance 1 - similarity) and mean within-set and between-set similarities.

    A text's silhouette is (b - a) / max(a, b), a = its mean distance to its own set, b = to the
    nearest other set: near 1 when sets are tight and far apart, near 0 when they overlap, negative
    when texts sit closer to another set than to their own. Texts alone in their set count as 0.
    """
    n = len(groups)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    within: list[float] = []
    between: list[float] = []
    for i in range(n):
        for j in range(i + 1, n):
            (within if groups[i] == groups[j] else between).append(sim[i][j])
    if len(members) < 2:
        return Separation(None, _mean(within), None)
    scores = []
    for i, g in enumerate(groups):
        own = members[g]
        if len(own) == 1:
            scores.append(0.0)
            continue
        a = sum(1 - sim[i][j] for j in own if j != i) / (len(own) - 1)
        b = min(sum(1 - sim[i][j] for j in idx) / len(idx) for h, idx in members.items() if h != g)
        top = max(a, b)
        scores.append((b - a) / top if top > 0 else 0.0)
    return Separation(_mean(scores), _mean(within), _mean(between))


def set_means(sim: Matrix, groups: Sequence[int], count: int) -> list[list[float | None]]:
    """count x count mean similarity between sets (the diagonal leaves out each text with itself)."""
    sums = [[0.0] * count for _ in range(count)]
    pairs = [[0] * count for _ in range(count)]
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            if i != j:
                sums[gi][gj] += sim[i][j]
                pairs[gi][gj] += 1
    return [
        [s / p if p else None for s, p in zip(srow, prow, strict=True)]
        for srow, prow in zip(sums, pairs, strict=True)
    ]


def nearest(sim: Matrix, i: int, k: int = 3) -> list[tuple[int, float]]:
    """The k texts most similar to text i (itself left out), most similar first."""
    others = sorted((j for j in range(len(sim)) if j != i), key=lambda j: -sim[i][j])
    return [(j, sim[i][j]) for j in others[:k]]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
