r"""Neural-collapse metrics NC1-NC4 as pure functions of (features, labels, W, b).

Definitions (Papyan, Han & Donoho 2020), with h_i the penultimate feature of sample i, N samples,
K classes:

* mu_c = mean feature of class c; mu_G = mean of the class means; M = [mu_c - mu_G] (d x K).
* Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T; Sigma_B = (1/K) sum_c (mu_c - mu_G)(mu_c - mu_G)^T.
* ``nc1`` = Tr(Sigma_W Sigma_B^+)/K, Sigma_B^+ the pseudo-inverse on the top K-1 eigenpairs, in float64.
* ``equinorm_means`` / ``equinorm_classifiers`` = std/mean (ddof=1) of ||mu_c - mu_G|| / of ||w_c||.
* ``equiangular_means`` / ``equiangular_classifiers`` = std (ddof=1) of the cosines over pairs c < c'.
* ``maxangle_means`` / ``maxangle_classifiers`` = mean over pairs of |cos + 1/(K-1)|.
* ``self_duality`` = || W^T/||W||_F - M/||M||_F ||_F^2.
* ``ncc_mismatch`` = fraction of samples where argmax_c (W h + b)_c differs from argmin_c ||h - mu_c||.

Extras (``extras=True``): ``nc1_trace_ratio`` = Tr(Sigma_W)/Tr(Sigma_B), and ``cdnv``, the
class-distance normalized variance of Galanti et al. (2022): the mean over pairs of
(sigma_c^2 + sigma_c'^2) / (2 ||mu_c - mu_c'||^2) with sigma_c^2 the trace of class c's covariance.

Every statistic is accumulated in float64. :class:`ClassStats` accumulates class statistics batch
by batch (Chan et al.'s pairwise update, exact and numerically stable), on whatever device the
features live on, so :func:`collapse_metrics_streaming` never holds the N x d feature matrix.
With K = 2 there is a single pair of classes, so the two ``equiangular_*`` spreads are 0.

Degenerate input never yields a plausible number: when the class means coincide up to rounding
(their spread is below 1e-10 of the RMS feature norm) ``nc1`` and every metric of the means are NaN,
with a ``RuntimeWarning``; features whose float64 second moments overflow (|h| near 1e154 and
beyond) or underflow (means below 1e-100) are refused with a ValueError.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable

import numpy as np
import torch

__all__ = [
    "METRIC_KEYS", "EXTRA_KEYS", "ClassStats", "collapse_metrics", "collapse_metrics_streaming",
    "metrics_from_stats", "ncc_mismatch_count",
]

METRIC_KEYS = (
    "nc1", "equinorm_means", "equinorm_classifiers", "equiangular_means",
    "equiangular_classifiers", "maxangle_means", "maxangle_classifiers", "self_duality",
    "ncc_mismatch",
)
EXTRA_KEYS = ("nc1_trace_ratio", "cdnv")

# Singular values of M below this fraction of the largest are numerical zeros of Sigma_B.
_RANK_RTOL = 1e-12
# ... and so are those below this fraction of sqrt(K) x the RMS feature norm: a spread of the class
# means that small is rounding (float64 sums of float32 features), not a between-class scatter.
_SCALE_RTOL = 1e-10
_MEAN_KEYS = ("nc1", "equinorm_means", "equiangular_means", "maxangle_means", "self_duality",
              "nc1_trace_ratio", "cdnv")


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_features(features, name: str = "features") -> torch.Tensor:
    h = _as_tensor(features, name)
    if h.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape N x d, got shape {tuple(h.shape)}")
    if not (h.is_floating_point() or h.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got dtype {h.dtype}")
    if h.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not torch.isfinite(h).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return h


def _check_labels(labels, n: int, num_classes: int, name: str = "labels") -> torch.Tensor:
    y = _as_tensor(labels, name)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array of length {n} (one per feature row), "
                         f"got shape {tuple(y.shape)}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name} must lie in 0..{num_classes - 1} (K = {num_classes}), "
                         f"found values in [{lo}, {hi}]")
    return y.long()


def _check_classifier(weight, bias, dim: int | None):
    w = _as_tensor(weight, "weight")
    if w.ndim != 2:
        raise ValueError(f"weight must be a 2-D array of shape K x d, got shape {tuple(w.shape)}")
    k = w.shape[0]
    if k < 2:
        raise ValueError(f"weight must have K >= 2 rows (classes), got K = {k}")
    if dim is not None and w.shape[1] != dim:
        raise ValueError(f"weight must have shape K x d with d = {dim} (the feature dimension), "
                         f"got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("weight contains NaN or infinite values")
    b = None
    if bias is not None:
        b = _as_tensor(bias, "bias")
        if b.shape != (k,):
            raise ValueError(f"bias must have shape ({k},) to match weight's K = {k} rows, "
                             f"got shape {tuple(b.shape)}")
        if not torch.isfinite(b).all():
            raise ValueError("bias contains NaN or infinite values")
    return w, b


class ClassStats:
    """Per-class counts, means and within-class scatter, accumulated batch by batch in float64.

    ``update`` merges a batch with Chan et al.'s pairwise formula, so the result equals the
    two-pass computation up to rounding, without holding all features. The tensors live on the
    device of the first batch (GPU features stay on the GPU).
    """

    def __init__(self, num_classes: int):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.counts = self.means = self.scatter = self.class_scatter_trace = None

    @property
    def num_samples(self) -> int:
        return 0 if self.counts is None else int(self.counts.sum())

    @torch.no_grad()
    def update(self, features, labels) -> "ClassStats":
        h = _check_features(features)
        y = _check_labels(labels, h.shape[0], self.num_classes).to(h.device)
        h = h.to(torch.float64)
        k, d = self.num_classes, h.shape[1]
        if self.counts is None:
            z = dict(dtype=torch.float64, device=h.device)
            self.counts, self.means = torch.zeros(k, **z), torch.zeros(k, d, **z)
            self.scatter, self.class_scatter_trace = torch.zeros(d, d, **z), torch.zeros(k, **z)
        elif d != self.means.shape[1]:
            raise ValueError(f"features must have d = {self.means.shape[1]} columns like the "
                             f"earlier batches, got {d}")
        count_b = torch.bincount(y, minlength=k).to(torch.float64)
        mean_b = torch.zeros_like(self.means).index_add_(0, y, h) / count_b.clamp(min=1)[:, None]
        centered = h - mean_b[y]
        trace_b = torch.zeros_like(self.counts).index_add_(0, y, centered.square().sum(1))
        total = self.counts + count_b
        delta = mean_b - self.means
        weight = self.counts * count_b / total.clamp(min=1)
        self.scatter += centered.T @ centered + (delta * weight[:, None]).T @ delta
        self.class_scatter_trace += trace_b + weight * delta.square().sum(1)
        self.means += delta * (count_b / total.clamp(min=1))[:, None]
        self.counts = total
        return self

    def check_complete(self) -> None:
        if self.counts is None:
            raise ValueError("no batches were accumulated (features were empty)")
        missing = torch.nonzero(self.counts == 0).flatten().tolist()
        if missing:
            k = self.num_classes
            if missing == list(range(missing[0], k)):  # only the last rows are unused: blame W
                raise ValueError(f"weight has K = {k} rows (one per class) but labels only use classes "
                                 f"0..{missing[0] - 1}: the classifier weight must have one row per "
                                 f"class, K = {missing[0]} rows (or labels miss classes {missing})")
            raise ValueError(f"labels must contain every class 0..{k - 1}; "
                             f"classes with no samples: {missing}")
        finite = (torch.isfinite(self.scatter).all() and torch.isfinite(self.class_scatter_trace).all()
                  and torch.isfinite(self.means.square().sum(1)).all())
        if not finite:
            raise ValueError(f"features are too large: their float64 second moments overflow (largest "
                             f"|class mean| {float(self.means.abs().max()):.3g}); rescale the features")
        top = float(self.means.abs().max())
        if 0.0 < top < 1e-100 and float(self.class_scatter_trace.max()) < 1e-200:
            raise ValueError(f"features are too small: their float64 second moments underflow (largest "
                             f"|class mean| {top:.3g}); rescale the features")


def _pair_cosines(vectors: torch.Tensor) -> torch.Tensor:
    """Cosines between the rows of ``vectors`` (K x d) over unordered pairs c < c'."""
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    i, j = torch.triu_indices(len(vectors), len(vectors), offset=1)
    return (unit @ unit.T)[i, j]


def _spread(values: torch.Tensor) -> float:
    return float(values.std(unbiased=True)) if values.numel() > 1 else 0.0


def _geometry(vectors: torch.Tensor, k: int) -> tuple[float, float, float]:
    norms = vectors.norm(dim=1)
    cos = _pair_cosines(vectors)
    return (float(norms.std(unbiased=True) / norms.mean()), _spread(cos),
            float((cos + 1.0 / (k - 1)).abs().mean()))


@torch.no_grad()
def ncc_mismatch_count(h: torch.Tensor, means: torch.Tensor, w: torch.Tensor, b=None) -> int:
    """How many rows of ``h`` the classifier (w, b) and the nearest class mean label differently."""
    h = h.to(torch.float64)
    logits = h @ w.T.to(h)
    if b is not None:
        logits = logits + b.to(h)
    dist = means.square().sum(1) - 2.0 * h @ means.T  # ||h - mu_c||^2 up to a per-row constant
    return int((logits.argmax(1) != dist.argmin(1)).sum())


@torch.no_grad()
def metrics_from_stats(stats: ClassStats, weight, bias=None, ncc_mismatch: float = math.nan,
                       extras: bool = False) -> dict[str, float]:
    """Collapse metrics from accumulated :class:`ClassStats` and the classifier (W, b)."""
    stats.check_complete()
    k, d = stats.means.shape
    w, _ = _check_classifier(weight, bias, d)
    if w.shape[0] != k:
        raise ValueError(f"weight must have K = {k} rows (one per class), got {w.shape[0]}")
    w = w.to(device=stats.means.device, dtype=torch.float64)
    n = stats.counts.sum()
    sigma_w = stats.scatter / n
    centered = stats.means - stats.means.mean(0)  # K x d, rows mu_c - mu_G
    # Sigma_B = M M^T / K; its eigenpairs come from the SVD of M (d x K), cheaper than d x d eigh.
    u, s, _ = torch.linalg.svd(centered.T, full_matrices=False)
    u, s = u[:, : k - 1], s[: k - 1]
    # RMS feature norm: sqrt(E ||h||^2) = sqrt(Tr Sigma_W + sum_c (n_c/N) ||mu_c||^2).
    scale = math.sqrt(float(torch.trace(sigma_w) + (stats.counts / n * stats.means.square().sum(1)).sum()))
    floor = _SCALE_RTOL * math.sqrt(k) * scale
    degenerate = s.numel() == 0 or float(s[0]) <= floor
    if degenerate:
        nc1 = math.nan  # all class means coincide (up to rounding): Sigma_B = 0, NC1 is undefined
        spread = float(s[0]) / math.sqrt(k) if s.numel() else 0.0
        warnings.warn(f"the class means coincide up to rounding (spread {spread:.3g} against an RMS "
                      f"feature norm of {scale:.3g}): NC1 and the geometry of the means are undefined "
                      "and returned as NaN", RuntimeWarning, stacklevel=2)
    else:
        keep = s > max(_RANK_RTOL * float(s[0]), floor)
        u, eig_b = u[:, keep], s[keep].square() / k
        quad = ((sigma_w @ u) * u).sum(0)  # u_j^T Sigma_W u_j, one per kept eigenpair
        nc1 = float((quad / eig_b).sum() / k)
    eqn_m, eqa_m, max_m = _geometry(centered, k)
    eqn_w, eqa_w, max_w = _geometry(w, k)
    m_t = centered.T
    duality = float((w.T / w.norm() - m_t / m_t.norm()).square().sum())
    out = {
        "nc1": nc1, "equinorm_means": eqn_m, "equinorm_classifiers": eqn_w,
        "equiangular_means": eqa_m, "equiangular_classifiers": eqa_w, "maxangle_means": max_m,
        "maxangle_classifiers": max_w, "self_duality": duality, "ncc_mismatch": float(ncc_mismatch),
    }
    if extras:
        i, j = torch.triu_indices(k, k, offset=1)
        var = stats.class_scatter_trace / stats.counts
        gaps = (stats.means[i] - stats.means[j]).square().sum(1)
        out["nc1_trace_ratio"] = float(torch.trace(sigma_w) / (centered.square().sum() / k))
        out["cdnv"] = float(((var[i] + var[j]) / (2.0 * gaps)).mean())
    if degenerate:
        out.update({key: math.nan for key in _MEAN_KEYS if key in out})
    return out


def collapse_metrics(features, labels, weight, bias=None, extras: bool = False) -> dict[str, float]:
    """NC1-NC4 of ``features`` (N x d) with integer ``labels`` (N) and classifier ``weight`` (K x d),
    ``bias`` (K) or None. Accepts torch tensors or numpy arrays; computes in float64 on the
    features' device. Returns exactly :data:`METRIC_KEYS` (plus :data:`EXTRA_KEYS` if ``extras``).
    """
    h = _check_features(features)
    w, b = _check_classifier(weight, bias, h.shape[1])
    stats = ClassStats(w.shape[0]).update(h, labels)
    stats.check_complete()
    wrong = ncc_mismatch_count(h, stats.means, w, b)
    return metrics_from_stats(stats, w, b, ncc_mismatch=wrong / h.shape[0], extras=extras)


def collapse_metrics_streaming(batches: Callable[[], Iterable] | Iterable, weight, bias=None,
                               extras: bool = False) -> dict[str, float]:
    """Same numbers as :func:`collapse_metrics`, from (features, labels) batches.

    ``batches`` is a zero-argument callable returning an iterable of ``(features, labels)`` (for
    example a function that runs the network over a DataLoader) or a re-iterable collection. It is
    iterated twice: once for the class statistics, once for the nearest-class-center decisions,
    which need the final class means. Only K x d and d x d float64 tensors are kept.
    """
    w, b = _check_classifier(weight, bias, None)
    source = batches if callable(batches) else (lambda: batches)
    stats = ClassStats(w.shape[0])
    for h, y in source():
        stats.update(h, y)
    stats.check_complete()
    if w.shape[1] != stats.means.shape[1]:
        raise ValueError(f"weight must have shape K x d with d = {stats.means.shape[1]} (the feature "
                         f"dimension of the batches), got shape {tuple(w.shape)}")
    wrong = seen = 0
    for h, y in source():
        h = _check_features(h)
        wrong += ncc_mismatch_count(h.to(stats.means.device), stats.means, w.to(stats.means.device),
                                 None if b is None else b.to(stats.means.device))
        seen += h.shape[0]
    if seen != stats.num_samples:
        raise ValueError(f"batches yielded {stats.num_samples} samples on the first pass and {seen} "
                         "on the second; it must yield the same data each time it is called")
    return metrics_from_stats(stats, w, b, ncc_mismatch=wrong / seen, extras=extras)
