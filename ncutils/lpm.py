r"""The Layer-Peeled Model of Fang, He, Long & Su (2021): minority collapse under class imbalance.

K classes, the first ``K_A`` (majority) with n_A samples each and the other K_B = K - K_A
(minority) with n_B = n_A / R each. With free last-layer features h_{k,i} and classifier rows w_k,

    min  (1/N) sum_k sum_{i <= n_k} CE(W h_{k,i}, k)
    s.t. (1/K) sum_k ||w_k||^2 <= E_W,   (1/K) sum_k (1/n_k) sum_i ||h_{k,i}||^2 <= E_H.

Cross entropy is convex in h and the feature constraint is a weighted mean of squares, so replacing
every h_{k,i} by its class mean h_k keeps the constraint and does not raise the loss (Jensen): the
problem is the same over class means with class weights n_k / N. Its convex relaxation (the
authors' ``optimization.py``) optimizes the Gram matrix X of the 2K vectors
(h_1..h_K, w_1..w_K), X PSD, with logits X[k, K + j] = h_k . w_j and the two constraints as traces;
it is tight once the feature dimension is at least 2K (any PSD X factors as X = V V^T).

- :func:`solve_convex`: the relaxation with cvxpy (Clarabel by default, the interior-point solver
  cvxpy ships; the authors ran cvxpy 1.1.7's default, SCS).
- :func:`solve_first_order`: the non-convex model itself (W, H free, float64), by accelerated
  projected gradient onto the two constraint sets, either over class means or over every sample
  (``n_minority``: n_B samples per minority class, R n_B per majority class).
- :func:`minority_cosine`: the mean pairwise cosine of the minority classifiers, the authors'
  measure of minority collapse (1 when they coincide).
- :func:`collapse_threshold`: the smallest R at which the minority classifiers coincide.
- :func:`model_experiment`: the sweep behind chapter 5 (tables ``sweep`` and ``first_order``).

Objective values are sample means (the 1/N of the model above). The authors' program minimizes the
plain sum sum_k c_k CE_k with c_k = 1 (majority) and 1/R (minority), which is the sample mean times
K_A + K_B / R: the same minimizer.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DEFAULTS", "ratio_grid", "class_weights", "objective", "LPMSolution", "solve_convex",
           "solve_first_order", "minority_cosine", "group_cosine", "collapse_threshold",
           "etf_classifier_gram", "model_experiment"]

DEFAULTS = dict(K=10, K_A=5, E_H=5.0, E_W=1.0)  # the authors' Figure 3 (optimization.py)
COLLAPSED = 1 - 1e-6  # minority cosine at or above which the minority classifiers count as one


# ----------------------------------------------------------------------------- argument checks
def _int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _pos(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite real number > 0, got {value!r}")
    return float(value)


def _ratio(R) -> float:
    if isinstance(R, bool) or not isinstance(R, numbers.Real) or math.isnan(R) or R < 1:
        raise ValueError(f"R (imbalance ratio n_A / n_B) must be a real number >= 1 or inf, got {R!r}")
    return float(R)


def _check(K, K_A, E_H, E_W, R):
    K = _int(K, "K", 2)
    K_A = _int(K_A, "K_A", 0)
    if K_A > K:
        raise ValueError(f"K_A (majority classes) must be <= K={K}, got {K_A}")
    return K, K_A, _pos(E_H, "E_H"), _pos(E_W, "E_W"), _ratio(R)


def ratio_grid(n: int = 41, step: float = 0.1) -> list[float]:
    """The authors' grid R = 10^(step * i), i = 0..n-1 (default 1 to 10^4 in 41 points)."""
    n, step = _int(n, "n", 1), _pos(step, "step")
    return [10 ** (step * i) for i in range(n)]


def class_weights(K: int, K_A: int, R: float) -> np.ndarray:
    """Relative class sizes n_k / n_A: 1 for the K_A majority classes, 1/R for the others
    (0 at R = inf, where the minority classes drop out of the loss as in the authors' code)."""
    K, K_A, _, _, R = _check(K, K_A, 1.0, 1.0, R)
    return np.array([1.0] * K_A + [0.0 if math.isinf(R) else 1.0 / R] * (K - K_A))


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def _loss_grad(F, W, y, s):
    """sum_i s_i CE(W f_i, y_i), and its gradients in F (rows f_i) and W."""
    Z = F @ W.T
    lse = _logsumexp(Z)
    loss = float(np.sum(s * (lse - Z[np.arange(len(y)), y])))
    G = np.exp(Z - lse[:, None])
    G[np.arange(len(y)), y] -= 1.0
    G *= s[:, None]
    return loss, G @ W, G.T @ F


def objective(H, W, R: float, K_A: int) -> float:
    """The model's loss (sample mean) at class-mean features ``H`` (K x p, rows h_k) and
    classifier ``W`` (K x p): sum_k n_k CE(W h_k, k) / N."""
    H, W = np.asarray(H, dtype=np.float64), np.asarray(W, dtype=np.float64)
    if H.ndim != 2 or W.shape != H.shape:
        raise ValueError(f"H and W must be K x p arrays of the same shape, got {H.shape} and {W.shape}")
    c = class_weights(H.shape[0], K_A, R)
    return _loss_grad(H, W, np.arange(len(c)), c / c.sum())[0]


def etf_classifier_gram(K: int, E_W: float) -> np.ndarray:
    """E_W K/(K-1) (I - 11^T/K): the Gram matrix of a simplex ETF with ||w_k||^2 = E_W, the
    balanced model's optimal classifier."""
    K, E_W = _int(K, "K", 2), _pos(E_W, "E_W")
    return E_W * (K * np.eye(K) - np.ones((K, K))) / (K - 1)


def group_cosine(vectors_or_gram, rows, gram: bool = False) -> float:
    """Mean cosine over the ordered pairs i != j of ``rows`` (vectors as rows, or a Gram matrix)."""
    G = np.asarray(vectors_or_gram, dtype=np.float64)
    if not gram:
        G = G @ G.T
    rows = list(rows)
    if len(rows) < 2:
        raise ValueError(f"rows must name at least 2 vectors, got {rows}")
    sub = G[np.ix_(rows, rows)]
    norms = np.sqrt(np.diag(sub))
    if np.any(norms <= 0):
        raise ValueError("a vector of zero norm has no cosine")
    cos = sub / np.outer(norms, norms)
    return float(cos[~np.eye(len(rows), dtype=bool)].mean())


def minority_cosine(W, K_A: int, gram: bool = False) -> float:
    """Mean pairwise cosine of the minority classifier rows ``W[K_A:]`` (uncentered, as the authors
    compute it); ``gram=True`` when ``W`` is already the K x K Gram matrix."""
    W = np.asarray(W, dtype=np.float64)
    K_A = _int(K_A, "K_A", 0)
    if W.ndim != 2 or W.shape[0] - K_A < 2:
        raise ValueError(f"W must be a K x d array with at least 2 minority rows after K_A={K_A}, "
                         f"got shape {W.shape}")
    return group_cosine(W, range(K_A, W.shape[0]), gram=gram)


@dataclass
class LPMSolution:
    """A solution of the model: class-mean features ``H`` and classifier ``W`` (rows, K x p)."""

    R: float
    K: int
    K_A: int
    E_H: float
    E_W: float
    H: np.ndarray
    W: np.ndarray
    objective: float
    method: str
    status: str = "optimal"
    iterations: int = 0
    seconds: float = 0.0
    gram: np.ndarray | None = None  # the relaxation's X (2K x 2K), when solved convexly
    features: np.ndarray | None = field(default=None, repr=False)  # per-sample features, if any

    @property
    def classifier_gram(self) -> np.ndarray:
        return self.gram[self.K:, self.K:] if self.gram is not None else self.W @ self.W.T

    @property
    def feature_gram(self) -> np.ndarray:
        return self.gram[:self.K, :self.K] if self.gram is not None else self.H @ self.H.T

    @property
    def minority_cosine(self) -> float:
        return minority_cosine(self.classifier_gram, self.K_A, gram=True)

    @property
    def majority_cosine(self) -> float:
        return group_cosine(self.classifier_gram, range(self.K_A), gram=True) if self.K_A >= 2 else math.nan

    def constraint_values(self) -> tuple[float, float]:
        """((1/K) sum ||h_k||^2, (1/K) sum ||w_k||^2), to compare with (E_H, E_W)."""
        return (float(np.trace(self.feature_gram)) / self.K, float(np.trace(self.classifier_gram)) / self.K)

    def record(self) -> dict:
        fh, fw = self.constraint_values()
        G = self.classifier_gram
        nw = np.diag(G)
        return {"R": self.R, "method": self.method, "status": self.status, "objective": self.objective,
                "minority_cosine": self.minority_cosine, "majority_cosine": self.majority_cosine,
                "w_sq_majority": float(nw[:self.K_A].mean()) if self.K_A else math.nan,
                "w_sq_minority": float(nw[self.K_A:].mean()),
                "h_sq_majority": float(np.diag(self.feature_gram)[:self.K_A].mean()) if self.K_A else math.nan,
                "h_sq_minority": float(np.diag(self.feature_gram)[self.K_A:].mean()),
                "feature_constraint": fh, "classifier_constraint": fw, "iterations": self.iterations,
                "seconds": self.seconds}


# ----------------------------------------------------------------------------- convex relaxation
def _factor(X: np.ndarray, dim: int | None = None) -> np.ndarray:
    """V (n x dim) with V V^T the PSD part of the symmetric X (negative eigenvalues dropped)."""
    vals, vecs = np.linalg.eigh((X + X.T) / 2)
    vals = np.clip(vals, 0, None)
    V = vecs * np.sqrt(vals)
    return V[:, ::-1][:, :dim or X.shape[0]]


# Clarabel's defaults (1e-8) leave the minority cosine near the onset of collapse off by ~1e-5;
# these tighter tolerances bring it within ~1e-7 of the first-order solution.
CLARABEL_TOLERANCES = dict(tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11, tol_ktratio=1e-9)


def solve_convex(R: float, K: int = 10, K_A: int = 5, E_H: float = 5.0, E_W: float = 1.0,
                 solver: str = "CLARABEL", **solver_options) -> LPMSolution:
    """Solve the convex relaxation (PSD Gram matrix X of features and classifiers) with cvxpy.

    With Clarabel (the default) the tolerances default to ``CLARABEL_TOLERANCES``;
    ``solver_options`` go to ``cvxpy.Problem.solve``.

    The loss is the authors' (majority classes weight 1, minority 1/R, summed), reported as the
    sample mean (divided by K_A + K_B / R). ``H`` and ``W`` of the result are a factorization of X.
    """
    import cvxpy as cp

    K, K_A, E_H, E_W, R = _check(K, K_A, E_H, E_W, R)
    c = class_weights(K, K_A, R)
    X = cp.Variable((2 * K, 2 * K), PSD=True)
    loss = sum(c[k] * (cp.log_sum_exp(X[k, K:]) - X[k, K + k]) for k in range(K) if c[k] > 0)
    prob = cp.Problem(cp.Minimize(loss), [cp.trace(X[:K, :K]) <= K * E_H, cp.trace(X[K:, K:]) <= K * E_W])
    start = time.perf_counter()
    if solver == "CLARABEL":
        solver_options = {**CLARABEL_TOLERANCES, **solver_options}
    with warnings.catch_warnings():  # "Solution may be inaccurate": recorded in the status instead
        warnings.simplefilter("ignore", UserWarning)
        prob.solve(solver=solver, **solver_options)
    seconds = time.perf_counter() - start
    if prob.status not in ("optimal", "optimal_inaccurate") or X.value is None:
        raise RuntimeError(f"cvxpy ({solver}) did not solve the relaxation at R={R}: status {prob.status}")
    Xv = (X.value + X.value.T) / 2
    V = _factor(Xv)
    stats = prob.solver_stats
    return LPMSolution(R=R, K=K, K_A=K_A, E_H=E_H, E_W=E_W, H=V[:K], W=V[K:],
                       objective=float(prob.value) / float(c.sum()), method=f"convex ({solver})",
                       status=prob.status, iterations=int(getattr(stats, "num_iters", 0) or 0),
                       seconds=seconds, gram=Xv)


# ----------------------------------------------------------------------------- first-order solver
def _project(V: np.ndarray, weights: np.ndarray, radius: float) -> np.ndarray:
    """Euclidean projection of the rows v_i onto {sum_i weights_i ||v_i||^2 <= radius}."""
    sq = np.square(V).sum(axis=1)
    if float(weights @ sq) <= radius:
        return V
    if np.allclose(weights, weights[0]):
        return V * math.sqrt(radius / float(weights @ sq))
    # v_i / (1 + lam c_i) with lam > 0 solving sum c_i ||v_i||^2 / (1 + lam c_i)^2 = radius
    lo, hi = 0.0, 1.0
    g = lambda lam: float(np.sum(weights * sq / (1 + lam * weights) ** 2)) - radius  # noqa: E731
    while g(hi) > 0:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if g(mid) > 0 else (lo, mid)
        if hi - lo <= 1e-15 * hi:
            break
    return V / (1 + hi * weights)[:, None]


def solve_first_order(R: float, K: int = 10, K_A: int = 5, E_H: float = 5.0, E_W: float = 1.0,
                      dim: int | None = None, n_minority: int | None = None, seed: int = 0,
                      restarts: int = 3, max_iter: int = 100_000, tol: float = 1e-12) -> LPMSolution:
    """Solve the non-convex model directly: W (K x dim) and the features free, float64,
    accelerated projected gradient (FISTA with backtracking and adaptive restart) onto the two
    constraint sets, from ``restarts`` random starts (the best is returned).

    ``n_minority=None`` optimizes the class means (weights n_k / N); an integer optimizes every
    sample's own feature, n_minority per minority class and R * n_minority (an integer) per
    majority class, under the per-sample constraint (1/K) sum_k (1/n_k) sum_i ||h_{k,i}||^2 <= E_H.
    Stops when the projected-gradient step moves the point by less than ``tol`` (relative).
    """
    K, K_A, E_H, E_W, R = _check(K, K_A, E_H, E_W, R)
    if math.isinf(R):
        raise ValueError("R must be finite for the first-order solver, got inf")
    dim = 2 * K if dim is None else _int(dim, "dim", 1)
    restarts, max_iter = _int(restarts, "restarts", 1), _int(max_iter, "max_iter", 1)
    tol = _pos(tol, "tol")
    c = class_weights(K, K_A, R)
    if n_minority is None:
        y, s, cw = np.arange(K), c / c.sum(), np.ones(K)
    else:
        n_minority = _int(n_minority, "n_minority", 1)
        n_major = R * n_minority
        if abs(n_major - round(n_major)) > 1e-9 * n_major:
            raise ValueError(f"R * n_minority must be an integer number of majority samples, "
                             f"got R={R}, n_minority={n_minority}")
        counts = np.array([round(n_major)] * K_A + [n_minority] * (K - K_A))
        y = np.repeat(np.arange(K), counts)
        s = np.full(len(y), 1.0 / len(y))
        cw = 1.0 / counts[y]
    n = len(y)
    best, start = None, time.perf_counter()
    total_iters = 0
    for r in range(restarts):
        rng = np.random.default_rng([seed, r])
        F = _project(rng.standard_normal((n, dim)) * 10, cw, K * E_H)
        W = _project(rng.standard_normal((K, dim)) * 10, np.ones(K), K * E_W)
        x = np.concatenate([F, W])
        f_x, gF, gW = _loss_grad(F, W, y, s)
        z, t, step, it = x.copy(), 1.0, 1.0, 0
        for it in range(1, max_iter + 1):
            Fz, Wz = z[:n], z[n:]
            f_z, gF, gW = _loss_grad(Fz, Wz, y, s)
            g = np.concatenate([gF, gW])
            while True:  # backtracking on the projected step from z
                cand = z - step * g
                new = np.concatenate([_project(cand[:n], cw, K * E_H), _project(cand[n:], np.ones(K), K * E_W)])
                d = new - z
                f_new = _loss_grad(new[:n], new[n:], y, s)[0]
                if f_new <= f_z + float(np.sum(g * d)) + float(np.sum(d * d)) / (2 * step) + 1e-15:
                    break
                step /= 2
            moved = float(np.linalg.norm(new - x)) / max(1.0, float(np.linalg.norm(x)))
            if f_new > f_x:  # adaptive restart: drop the momentum ...
                if t == 1.0:  # ... unless there was none: x is stationary up to rounding
                    break
                t, z = 1.0, x.copy()
                continue
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = new + ((t - 1) / t_next) * (new - x)
            x, f_x, t = new, f_new, t_next
            step *= 1.1  # let the step grow back after backtracking
            if moved < tol:
                break
        total_iters += it
        if best is None or f_x < best[0]:
            best = (f_x, x.copy(), it)
    f_x, x, _ = best
    F, W = x[:n], x[n:]
    H = F if n_minority is None else np.stack([F[y == k].mean(axis=0) for k in range(K)])
    return LPMSolution(R=R, K=K, K_A=K_A, E_H=E_H, E_W=E_W, H=H, W=W, objective=f_x,
                       method="first-order" + ("" if n_minority is None else f" (per sample, n_B={n_minority})"),
                       status="converged" if best[2] < max_iter else "max_iter", iterations=total_iters,
                       seconds=time.perf_counter() - start, features=None if n_minority is None else F)


# ----------------------------------------------------------------------------- the onset of collapse
def collapse_threshold(K: int = 10, K_A: int = 5, E_H: float = 5.0, E_W: float = 1.0,
                       lo: float = 1.0, hi: float = 1e4, rel_tol: float = 1e-4,
                       level: float = COLLAPSED, **solver_options) -> float:
    """The smallest R at which the minority classifiers coincide (minority cosine >= ``level``),
    by bisection in log R between ``lo`` (not collapsed) and ``hi`` (collapsed)."""
    _check(K, K_A, E_H, E_W, 1.0)
    lo, hi, rel_tol = _ratio(lo), _ratio(hi), _pos(rel_tol, "rel_tol")
    if hi <= lo:
        raise ValueError(f"hi must be > lo, got lo={lo}, hi={hi}")
    cos = lambda R: solve_convex(R, K, K_A, E_H, E_W, **solver_options).minority_cosine  # noqa: E731
    if cos(lo) >= level:
        raise ValueError(f"the minority classifiers have already collapsed at lo={lo}")
    if cos(hi) < level:
        raise ValueError(f"the minority classifiers have not collapsed by hi={hi}")
    while hi / lo > 1 + rel_tol:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if cos(mid) >= level else (mid, hi)
    return hi


# ----------------------------------------------------------------------------- chapter 5's sweep
def model_experiment(run, cfg: dict) -> dict:
    """Chapter 5's model computation into ``run``: table ``sweep`` (the relaxation at every R of
    ``cfg['ratios']``), table ``first_order`` (both solvers at ``cfg['check_ratios']``) and the
    collapse threshold in the summary."""
    K, K_A, E_H, E_W = (cfg[k] for k in ("K", "K_A", "E_H", "E_W"))
    start = time.perf_counter()
    rows = [solve_convex(R, K, K_A, E_H, E_W).record() for R in cfg["ratios"]]
    run.save_table("sweep", rows)
    checks = []
    for R in cfg["check_ratios"]:
        conv = solve_convex(R, K, K_A, E_H, E_W)
        fo = solve_first_order(R, K, K_A, E_H, E_W, seed=cfg.get("seed", 0), restarts=cfg["fo_restarts"],
                               max_iter=cfg["fo_max_iter"])
        for sol in (conv, fo):
            checks.append(dict(sol.record(), objective_gap=sol.objective - conv.objective,
                               cosine_gap=sol.minority_cosine - conv.minority_cosine))
    run.save_table("first_order", checks)
    threshold = collapse_threshold(K, K_A, E_H, E_W, lo=cfg["threshold_bracket"][0],
                                   hi=cfg["threshold_bracket"][1], rel_tol=cfg["threshold_rel_tol"])
    fo = [r for r in checks if r["method"].startswith("first-order")]
    return {"collapse_threshold": threshold, "wall_seconds": time.perf_counter() - start,
            "max_objective_gap": max(abs(r["objective_gap"]) for r in fo),
            "max_cosine_gap": max(abs(r["cosine_gap"]) for r in fo)}
