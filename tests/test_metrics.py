import itertools

import numpy as np
import pytest
import torch

from ncutils.etf import simplex_etf
from ncutils.metrics import (EXTRA_KEYS, METRIC_KEYS, ClassStats, collapse_metrics,
                             collapse_metrics_streaming)


def numpy_reference(h, y, w, b):
    """Plain float64 NumPy, straight from the definitions (per-sample outer products)."""
    h, w = np.asarray(h, np.float64), np.asarray(w, np.float64)
    k, n = w.shape[0], len(y)
    mu = np.stack([h[y == c].mean(0) for c in range(k)])
    mg = mu.mean(0)
    m = (mu - mg).T
    sw = sum(np.outer(h[i] - mu[y[i]], h[i] - mu[y[i]]) for i in range(n)) / n
    sb = m @ m.T / k
    vals, vecs = np.linalg.eigh(sb)
    vals, vecs = vals[-(k - 1):], vecs[:, -(k - 1):]
    sb_pinv = vecs @ np.diag(1 / vals) @ vecs.T
    pairs = list(itertools.combinations(range(k), 2))

    def geo(v):
        norms = np.linalg.norm(v, axis=1)
        cos = np.array([v[i] @ v[j] / norms[i] / norms[j] for i, j in pairs])
        return norms.std(ddof=1) / norms.mean(), cos.std(ddof=1), np.abs(cos + 1 / (k - 1)).mean()

    gm, gw = geo(m.T), geo(w)
    logits = h @ w.T + (0 if b is None else b)
    dist = ((h[:, None, :] - mu[None]) ** 2).sum(-1)
    return {
        "nc1": np.trace(sw @ sb_pinv) / k,
        "equinorm_means": gm[0], "equinorm_classifiers": gw[0],
        "equiangular_means": gm[1], "equiangular_classifiers": gw[1],
        "maxangle_means": gm[2], "maxangle_classifiers": gw[2],
        "self_duality": np.sum((w.T / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2),
        "ncc_mismatch": np.mean(logits.argmax(1) != dist.argmin(1)),
    }


def random_problem(n=300, d=20, k=5, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    centers = rng.normal(size=(k, d)) * 3
    h = centers[y] + spread * rng.normal(size=(n, d))
    w = rng.normal(size=(k, d))
    b = rng.normal(size=k)
    return h.astype(np.float32), y, w.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("k,d", [(10, 32), (10, 9), (3, 2), (4, 50)])
def test_exact_etf_with_self_dual_classifier_gives_zero(k, d):
    frame = simplex_etf(k, d, seed=1, dtype=torch.float64)  # d x K
    n = 7
    h = (2.5 * frame.T).repeat_interleave(n, 0) + torch.randn(d, dtype=torch.float64)  # any global shift
    y = torch.arange(k).repeat_interleave(n)
    w = 0.7 * frame.T
    b = -(w @ h.mean(0))  # the bias that makes (W, b) the nearest-center rule exactly
    out = collapse_metrics(h, y, w, b, extras=True)
    assert set(out) == set(METRIC_KEYS) | set(EXTRA_KEYS)
    for key, value in out.items():
        assert 0.0 <= value < 1e-12, (key, value)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_numpy_reference(seed):
    h, y, w, b = random_problem(seed=seed)
    ours = collapse_metrics(h, y, w, b)
    ref = numpy_reference(h, y, w, b)
    assert list(ours) == list(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert ours[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    assert collapse_metrics(torch.from_numpy(h), torch.from_numpy(y), torch.from_numpy(w)) == \
        collapse_metrics(h, y, w)


def test_nc1_never_negative_in_float32_near_collapse():
    # Tiny within-class spread in float32 features: a plain pinv of float32 Sigma_B goes negative.
    h, y, w, b = random_problem(n=2000, d=64, k=10, spread=1e-4, seed=3)
    value = collapse_metrics(h, y, w, b)["nc1"]
    ref = numpy_reference(h, y, w, b)["nc1"]
    assert value > 0 and value == pytest.approx(ref, rel=1e-6)


def test_streaming_equals_in_memory_on_cpu_batches():
    h, y, w, b = random_problem(n=1000, d=16, k=6, seed=4)
    batches = [(h[i:i + 64], y[i:i + 64]) for i in range(0, len(y), 64)]
    full = collapse_metrics(h, y, w, b, extras=True)
    for source in (batches, lambda: iter(batches)):
        stream = collapse_metrics_streaming(source, w, b, extras=True)
        for key in full:
            assert stream[key] == pytest.approx(full[key], rel=1e-10, abs=1e-14), key


def test_streaming_is_stable_with_a_large_common_offset():
    # Means far from the origin, tiny spread: a raw second-moment accumulator would cancel.
    h, y, w, b = random_problem(n=600, d=8, k=4, spread=1e-3, seed=5)
    h = h.astype(np.float64) + 1e4
    stats = ClassStats(4)
    for i in range(0, 600, 50):
        stats.update(h[i:i + 50], y[i:i + 50])
    mu = np.stack([h[y == c].mean(0) for c in range(4)])
    centered = h - mu[y]
    np.testing.assert_allclose(stats.scatter.numpy(), centered.T @ centered, rtol=1e-6, atol=1e-9)


def test_streaming_refuses_a_source_that_changes():
    h, y, w, _ = random_problem(n=100, d=4, k=3)
    calls = []

    def source():
        calls.append(1)
        return [(h, y)] if len(calls) == 1 else [(h[:50], y[:50])]

    with pytest.raises(ValueError, match="same data"):
        collapse_metrics_streaming(source, w)


@pytest.mark.parametrize("mutate,match", [
    (lambda h, y, w, b: (np.where(np.arange(h.size).reshape(h.shape) == 7, np.nan, h), y, w, b), "features contains NaN"),
    (lambda h, y, w, b: (np.where(np.arange(h.size).reshape(h.shape) == 7, np.inf, h), y, w, b), "features contains NaN or infinite"),
    (lambda h, y, w, b: (h, np.where(np.arange(len(y)) == 3, 5, y), w, b), r"labels must lie in 0\.\.4"),
    (lambda h, y, w, b: (h, np.where(np.arange(len(y)) == 3, -1, y), w, b), r"labels must lie in 0\.\.4"),
    (lambda h, y, w, b: (h[y != 2], y[y != 2], w, b), r"classes with no samples: \[2\]"),
    (lambda h, y, w, b: (h, np.zeros_like(y), w[:1], b[:1]), "K >= 2"),
    (lambda h, y, w, b: (h[:, :5], y, w, b), "d = 5"),
    (lambda h, y, w, b: (h, y[:-1], w, b), "labels must be a 1-D array of length"),
    (lambda h, y, w, b: (h, y, w, b[:3]), r"bias must have shape \(5,\)"),
    (lambda h, y, w, b: (h, y.astype(np.float32), w, b), "integer class indices"),
    (lambda h, y, w, b: (h[0], y, w, b), "2-D array of shape N x d"),
    (lambda h, y, w, b: (h.tolist(), y, w, b), "torch.Tensor or numpy.ndarray"),
])
def test_bad_input_is_refused(mutate, match):
    h, y, w, b = random_problem(n=60, d=8, k=5)
    with pytest.raises((ValueError, TypeError), match=match):
        collapse_metrics(*mutate(h, y, w, b))


def test_metrics_stay_on_the_features_device_and_need_no_grad():
    h, y, w, b = random_problem()
    wt = torch.from_numpy(w).requires_grad_()
    out = collapse_metrics(torch.from_numpy(h).requires_grad_(), torch.from_numpy(y), wt)
    assert all(isinstance(v, float) for v in out.values())
