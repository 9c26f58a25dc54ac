r"""The unconstrained features model (UFM) with cross-entropy of Zhu et al. (2021).

Features ``H`` (d x N, N = nK samples ordered class by class) are free variables next to the
classifier ``W`` (K x d) and bias ``b`` (K), and

    f(W, H, b) = (1/N) sum_i CE(W h_i + b, y_i)
                 + lambda_W/2 ||W||_F^2 + lambda_H/2 ||H||_F^2 + lambda_b/2 ||b||^2.

This module holds the objective, two solvers (full-batch gradient descent, L-BFGS), the closed
form of the global minimizer (an ETF scaled as derived in Chapter 2), critical points built on the
fixed-point subspaces of the model's symmetries, Hessian spectra (dense through
``torch.func.hessian``; Lanczos on Hessian-vector products for large problems), and
:func:`landscape_experiment`, the whole computation behind Chapter 2 (seven tables in a run).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .config import snapshot_epochs
from .etf import simplex_etf
from .metrics import collapse_metrics

__all__ = [
    "labels", "objective", "closed_form_optimum", "global_min_value", "origin_min_eig",
    "etf_optimum", "init", "fit", "symmetric_critical_point", "pack", "unpack", "gradient_norm",
    "hessian_eigs", "landscape_experiment", "landscape_config", "run_landscape", "LANDSCAPE_LABEL",
]

Triple = tuple  # (W, H, b)


# ----------------------------------------------------------------------------- input checks
def _int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _nonneg(value, name: str, positive: bool = False) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(value) and (value > 0 if positive else value >= 0))
    if not ok:
        raise ValueError(f"{name} must be a finite real number {'> 0' if positive else '>= 0'}, "
                         f"got {value!r}")
    return float(value)


def _sizes(K, n, d=None):
    out = (_int(K, "K", 2), _int(n, "n", 1))
    return out if d is None else (*out, _int(d, "d", 1))


def _lambdas(lambda_W, lambda_H, lambda_b=None):
    out = (_nonneg(lambda_W, "lambda_W", True), _nonneg(lambda_H, "lambda_H", True))
    return out if lambda_b is None else (*out, _nonneg(lambda_b, "lambda_b"))


def _shapes(W, H, b) -> tuple[int, int, int]:
    """(K, n, d) of a (W, H, b) triple, or a ValueError naming the bad argument."""
    for name, x, nd in (("W", W, 2), ("H", H, 2), ("b", b, 1)):
        if not isinstance(x, torch.Tensor) or x.ndim != nd:
            raise ValueError(f"{name} must be a {nd}-D torch.Tensor, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
    K, d = W.shape
    if K < 2 or H.shape[0] != d or H.shape[1] % K or H.shape[1] == 0 or b.shape != (K,):
        raise ValueError(f"need W (K x d, K >= 2), H (d x nK), b (K); got W {tuple(W.shape)}, "
                         f"H {tuple(H.shape)}, b {tuple(b.shape)}")
    return K, H.shape[1] // K, d


# ----------------------------------------------------------------------------- the objective
def labels(K: int, n: int, device=None) -> torch.Tensor:
    """Class indices of the N = nK samples, ordered class by class: 0,..,0, 1,..,1, ..."""
    K, n = _sizes(K, n)
    return torch.arange(K, device=device).repeat_interleave(n)


def _f(W, H, b, lam_w, lam_h, lam_b):
    K, N = W.shape[0], H.shape[1]
    Z = W @ H + b[:, None]  # K x N logits
    y = torch.arange(K, device=W.device).repeat_interleave(N // K)
    ce = torch.logsumexp(Z, 0).mean() - Z[y, torch.arange(N, device=W.device)].mean()
    return ce + 0.5 * (lam_w * W.square().sum() + lam_h * H.square().sum() + lam_b * b.square().sum())


def objective(W, H, b, lambda_W, lambda_H, lambda_b) -> torch.Tensor:
    """f(W, H, b) as a differentiable scalar tensor (samples ordered class by class)."""
    _shapes(W, H, b)
    return _f(W, H, b, *_lambdas(lambda_W, lambda_H, lambda_b))


# ----------------------------------------------------------------------------- closed form
def _c(n: int, lam_w: float, lam_h: float) -> tuple[float, float]:
    """(c, log c) for c = sqrt(n lambda_W lambda_H); log c from logs when the product underflows."""
    c = math.sqrt(n * lam_w * lam_h)
    if c > 0.0 and math.isfinite(c):
        return c, math.log(c)
    log_c = 0.5 * (math.log(n) + math.log(lam_w) + math.log(lam_h))
    return math.exp(log_c), log_c


def _t_star(K: int, c: float, log_c: float) -> float:
    """Optimal logit margin t = a s of the scalar problem; 0 when c = sqrt(n lW lH) >= 1/K."""
    if K * c >= 1.0:
        return 0.0
    if c > 0.0:
        return (K - 1) / K * math.log((1.0 - (K - 1) * c) / c)
    return (K - 1) / K * -log_c  # c underflowed to 0: log((1 - (K-1)c)/c) = -log c


def closed_form_optimum(K: int, n: int, lambda_W: float, lambda_H: float) -> tuple[float, float]:
    r"""``(w_norm_sq, s)`` of the global minimizer: ``||w_k||^2`` and ``s = ||h_{k,i}|| / ||w_k||``.

    With c = sqrt(n lambda_W lambda_H): s = sqrt(lambda_W / (n lambda_H)) and
    ||w_k||^2 = sqrt(n lambda_H / lambda_W) (K-1)/K log((1 - (K-1) c) / c) if c < 1/K, else 0
    (W = H = 0 is the minimizer; s is then reported as its limit). Valid for d >= K-1. Lambdas
    whose product underflows (below about 1e-160 each) are handled through log c.
    """
    K, n = _sizes(K, n)
    lam_w, lam_h = _lambdas(lambda_W, lambda_H)
    return _t_star(K, *_c(n, lam_w, lam_h)) * math.sqrt(n * lam_h / lam_w), math.sqrt(lam_w / (n * lam_h))


def global_min_value(K: int, n: int, lambda_W: float, lambda_H: float) -> float:
    """f at the global minimizer: -log(1-(K-1)c) + (K-1) c log((1-(K-1)c)/c), or log K if c >= 1/K."""
    K, n = _sizes(K, n)
    lam_w, lam_h = _lambdas(lambda_W, lambda_H)
    c, log_c = _c(n, lam_w, lam_h)
    if K * c >= 1.0:
        return math.log(K)
    if c == 0.0:
        return 0.0  # c log(1/c) -> 0 as c -> 0 (c below 1e-308 here)
    return -math.log1p(-(K - 1) * c) + (K - 1) * c * math.log((1.0 - (K - 1) * c) / c)


def origin_min_eig(K: int, n: int, lambda_W: float, lambda_H: float) -> float:
    """Smallest Hessian eigenvalue of f at W = H = 0, b = 0 (multiplicity d(K-1) when negative)."""
    K, n = _sizes(K, n)
    lam_w, lam_h = _lambdas(lambda_W, lambda_H)
    return 0.5 * (lam_w + lam_h) - math.sqrt(0.25 * (lam_w - lam_h) ** 2 + 1.0 / (K * K * n))


def etf_optimum(K: int, n: int, d: int, lambda_W: float, lambda_H: float, seed: int | None = None,
                dtype=torch.float64, device=None) -> Triple:
    """The closed-form global minimizer: W rows a scaled simplex ETF, h_{k,i} = s w_k, b = 0."""
    K, n, d = _sizes(K, n, d)
    if d < K - 1:
        raise ValueError(f"d must be >= K - 1 = {K - 1} for a simplex ETF, got {d}")
    a, s = closed_form_optimum(K, n, lambda_W, lambda_H)
    W = math.sqrt(a) * simplex_etf(K, d, seed=seed, dtype=dtype).T.to(device)
    return W, s * W.T.repeat_interleave(n, dim=1), torch.zeros(K, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- solvers
def init(K: int, n: int, d: int, seed: int = 0, scale: float = 1.0, dtype=torch.float64,
         device=None) -> Triple:
    """Random (W, H, b), i.i.d. N(0, scale^2 / d) entries (rows of W and columns of H have norm
    about ``scale`` whatever d), reproducible for a seed."""
    K, n, d = _sizes(K, n, d)
    std = _nonneg(scale, "scale") / math.sqrt(d)
    gen = torch.Generator().manual_seed(_int(seed, "seed", 0))
    shapes = ((K, d), (d, n * K), (K,))
    return tuple((std * torch.randn(s, generator=gen, dtype=torch.float64)).to(dtype=dtype, device=device)
                 for s in shapes)


def _expand(reduced, K, n, d, groups, rank):
    """Map variables of the tied problem (G classes, ``rank`` coordinates) to the full (W, H, b)."""
    Wr, Hr, br = reduced
    if groups is None and rank == d:
        return Wr, Hr, br
    g = torch.as_tensor(groups, device=Wr.device)
    cols = (g[:, None] * n + torch.arange(n, device=Wr.device)).flatten()
    pad = d - rank
    W = torch.nn.functional.pad(Wr[g], (0, pad))
    H = torch.nn.functional.pad(Hr[:, cols], (0, 0, 0, pad))
    return W, H, br[g]


def _solve(K, n, d, lams, seed, method, init_scale, lr, max_iter, tol, dtype, device, callback,
           start, groups, rank):
    if method not in ("lbfgs", "gd"):
        raise ValueError(f"method must be 'lbfgs' or 'gd', got {method!r}")
    max_iter = _int(max_iter, "max_iter", 1)
    tol, lr = _nonneg(tol, "tol"), _nonneg(lr, "lr", True)
    n_groups = K if groups is None else max(groups) + 1
    if start is None:
        start = init(n_groups, n, rank, seed=seed, scale=init_scale, dtype=dtype, device=device)
    for name, x in zip(("W", "H", "b"), start):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"start contains NaN or infinite values (in {name})")
    params = [x.detach().clone().to(dtype=dtype, device=device).requires_grad_(True) for x in start]

    def loss_fn():
        return _f(*_expand(params, K, n, d, groups, rank), *lams)

    def report(it):
        if callback is not None:
            with torch.no_grad():
                callback(it, *(x.detach().clone() for x in _expand(params, K, n, d, groups, rank)))

    report(0)
    if method == "lbfgs":
        # One iteration per step() (the L-BFGS memory persists across steps), so that every
        # iterate is reported and a stall at machine precision ends the run.
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=25, tolerance_grad=tol,
                                tolerance_change=0.0, history_size=50, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        it, best, stalls = 0, math.inf, 0
        while it < max_iter and stalls < 3:
            loss = float(opt.step(closure).detach())  # f at the iterate this step started from
            before, it = it, opt.state[params[0]]["n_iter"]
            if not (math.isfinite(loss) and all(bool(torch.isfinite(p).all()) for p in params)):
                raise RuntimeError(f"L-BFGS diverged at iteration {it} (objective {loss}, or a "
                                   "non-finite iterate)")
            if it == before:  # converged: max |gradient| <= tol at the start of this step
                break
            report(it)
            stalls = stalls + 1 if loss >= best else 0
            best = min(best, loss)
    else:
        for it in range(1, max_iter + 1):
            grads = torch.autograd.grad(loss_fn(), params)
            if max(float(g.abs().max()) for g in grads) <= tol:
                break
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p -= lr * g
            if not all(bool(torch.isfinite(p).all()) for p in params):
                raise RuntimeError(f"gradient descent diverged at iteration {it}; lower lr={lr}")
            report(it)
    with torch.no_grad():
        return tuple(x.detach().clone() for x in _expand(params, K, n, d, groups, rank))


def fit(K: int, n: int, d: int, lambda_W: float, lambda_H: float, lambda_b: float, seed: int = 0,
        method: str = "lbfgs", init_scale: float = 1.0, lr: float = 1.0, max_iter: int = 10_000,
        tol: float = 1e-10, dtype=torch.float64, device=None,
        callback: Callable | None = None, start: Triple | None = None) -> Triple:
    """Minimize f from a random start; returns (W K x d, H d x nK, b K) tensors.

    ``method``: ``"lbfgs"`` (strong-Wolfe line search) or ``"gd"`` (full-batch gradient descent
    with step ``lr``). Stops when max |gradient entry| <= ``tol`` or after ``max_iter`` iterations.
    ``callback(it, W, H, b)`` is called at iteration 0 and after every iteration; ``start``
    replaces the random initialization (:func:`init` with ``seed`` and ``init_scale``).
    """
    K, n, d = _sizes(K, n, d)
    lams = _lambdas(lambda_W, lambda_H, lambda_b)
    if start is not None and _shapes(*start) != (K, n, d):
        raise ValueError(f"start must be (W, H, b) for K={K}, n={n}, d={d}")
    return _solve(K, n, d, lams, seed, method, init_scale, lr, max_iter, tol, dtype, device,
                  callback, start, None, d)


def symmetric_critical_point(K: int, n: int, d: int, lambda_W: float, lambda_H: float,
                             lambda_b: float, groups: Sequence[int] | None = None,
                             rank: int | None = None, seed: int = 0, **solver) -> Triple:
    """A critical point of f on the fixed-point subspace of a symmetry of the model.

    Classes with equal ``groups`` labels (labels 0..G-1, one per class) share their classifier
    row, bias and features (swapping two classes and their samples leaves f unchanged), and only
    the first ``rank`` coordinates of W and H are nonzero (flipping the sign of a coordinate in
    both leaves f unchanged). f restricted to that subspace is minimized with :func:`fit`'s
    solver; by the principle of symmetric criticality the result is a critical point of the
    full f (check it with :func:`gradient_norm`). Not the global minimizer when two classes are
    tied or ``rank < K - 1``.
    """
    K, n, d = _sizes(K, n, d)
    lams = _lambdas(lambda_W, lambda_H, lambda_b)
    rank = d if rank is None else _int(rank, "rank", 1)
    groups = list(range(K)) if groups is None else groups
    if rank > d:
        raise ValueError(f"rank must be <= d = {d}, got {rank}")
    groups = [_int(g, "groups", 0) for g in groups]
    if len(groups) != K or sorted(set(groups)) != list(range(max(groups) + 1)):
        raise ValueError(f"groups must give one label per class (K = {K}) using every label "
                         f"0..G-1, got {groups}")
    kw = dict(method="lbfgs", init_scale=1.0, lr=1.0, max_iter=10_000, tol=1e-10,
              dtype=torch.float64, device=None, callback=None, start=None)
    unknown = set(solver) - set(kw)
    if unknown:
        raise ValueError(f"unknown solver options {sorted(unknown)}; allowed: {sorted(kw)}")
    kw.update(solver)
    return _solve(K, n, d, lams, seed, groups=groups, rank=rank, **kw)


# ----------------------------------------------------------------------------- derivatives
def pack(W, H, b) -> torch.Tensor:
    """The flat parameter vector (W, H, b) row-major, the ordering of :func:`hessian_eigs`."""
    return torch.cat([W.reshape(-1), H.reshape(-1), b.reshape(-1)])


def unpack(theta: torch.Tensor, K: int, n: int, d: int) -> Triple:
    K, n, d = _sizes(K, n, d)
    if theta.shape != (K * d + d * n * K + K,):
        raise ValueError(f"theta must have length Kd + dnK + K = {K * d + d * n * K + K}, "
                         f"got shape {tuple(theta.shape)}")
    W, H, b = theta.split([K * d, d * n * K, K])
    return W.reshape(K, d), H.reshape(d, n * K), b


def _flat_f(K, n, d, lams):
    return lambda theta: _f(*unpack(theta, K, n, d), *lams)


def gradient_norm(W, H, b, lambda_W, lambda_H, lambda_b) -> float:
    """Euclidean norm of the full gradient of f at (W, H, b)."""
    K, n, d = _shapes(W, H, b)
    theta = pack(W, H, b).detach().to(torch.float64)
    grad = torch.func.grad(_flat_f(K, n, d, _lambdas(lambda_W, lambda_H, lambda_b)))(theta)
    return float(grad.norm())


def hessian_eigs(W, H, b, lambda_W, lambda_H, lambda_b, k: int = 6, which: str = "smallest",
                 dense_max: int = 3000, tol: float = 1e-10, seed: int = 0, vectors: bool = False):
    """The ``k`` smallest (or largest) eigenvalues of the Hessian of f at (W, H, b), ascending.

    Dense (``torch.func.hessian`` + ``eigh``) when the number of parameters Kd + dN + K is at
    most ``dense_max``; otherwise Lanczos (``scipy.sparse.linalg.eigsh``, tolerance ``tol``) on
    Hessian-vector products (forward-over-reverse ``torch.func.jvp`` of ``torch.func.grad``),
    never forming the Hessian. With ``vectors=True`` returns ``(values, vectors)``, the
    eigenvectors as the columns of a (parameters x k) array in :func:`pack` order.
    """
    K, n, d = _shapes(W, H, b)
    lams = _lambdas(lambda_W, lambda_H, lambda_b)
    if which not in ("smallest", "largest"):
        raise ValueError(f"which must be 'smallest' or 'largest', got {which!r}")
    theta = pack(W, H, b).detach().to(torch.float64)
    size = theta.numel()
    k = _int(k, "k", 1)
    if k > size:
        raise ValueError(f"k must be <= the number of parameters {size}, got {k}")
    fun = _flat_f(K, n, d, lams)
    if size <= _int(dense_max, "dense_max", 0):
        vals, vecs = torch.linalg.eigh(torch.func.hessian(fun)(theta))
        keep = slice(0, k) if which == "smallest" else slice(size - k, size)
        vals, vecs = vals[keep].cpu().numpy(), vecs[:, keep].cpu().numpy()
    else:
        from scipy.sparse.linalg import LinearOperator, eigsh

        grad = torch.func.grad(fun)

        def matvec(v):
            v = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=torch.float64,
                                device=theta.device)
            return torch.func.jvp(grad, (theta,), (v,))[1].cpu().numpy()

        op = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(seed).standard_normal(size)
        vals, vecs = eigsh(op, k=k, which="SA" if which == "smallest" else "LA", tol=tol, v0=v0,
                           ncv=min(size, max(2 * k + 1, 40)))
        order = np.argsort(vals)
        vals, vecs = vals[order], vecs[:, order]
    return (vals, vecs) if vectors else vals


# ----------------------------------------------------------------------------- Chapter 2's experiment
@dataclass(frozen=True)
class _Setup:
    """What every part of :func:`landscape_experiment` shares: the preset's main instance."""

    cfg: dict
    K: int
    n: int
    d: int
    lams: tuple  # (lambda_W, lambda_H, lambda_b)
    f_star: float
    a_star: float
    seed: int
    device: str

    @property
    def dev(self) -> dict:
        return dict(device=self.device)


def _record(W, H, b, lams, f_star) -> dict:
    """Objective gap, gradient norm and NC metrics of one point (K, n taken from its shape)."""
    K_, n_ = W.shape[0], H.shape[1] // W.shape[0]
    out = {"gap": float(objective(W, H, b, *lams)) - f_star,
           "grad_norm": gradient_norm(W, H, b, *lams),
           "w_norm_sq": float(W.square().sum(1).mean()), "w_norm_sq_spread": float(W.square().sum(1).std())}
    if float(W.norm()) > 1e-8:
        out["s"] = float(H.norm(dim=0).mean() / W.norm(dim=1).mean())
        out.update(collapse_metrics(H.T, labels(K_, n_, device=W.device), W, b))
    return out


def _theta(point) -> torch.Tensor:
    return pack(*point).detach().cpu()


def _path_table(run, S: _Setup) -> None:
    """1. Collapse along gradient-descent paths, from ordinary and from near-zero starts."""
    cfg, y = S.cfg, labels(S.K, S.n, device=S.device)
    marks = set(snapshot_epochs(cfg["gd_max_iter"], cfg["path_points"])) | {0}
    rows = []
    for scale in cfg["path_init_scales"]:
        for seed in range(cfg["path_seeds"]):
            def log(it, W, H, b, scale=scale, seed=seed):
                if it in marks:
                    rows.append({"init_scale": scale, "seed": seed, "iteration": it,
                                 "gap": float(objective(W, H, b, *S.lams)) - S.f_star,
                                 **collapse_metrics(H.T, y, W, b)})
            fit(S.K, S.n, S.d, *S.lams, seed=S.seed + seed, method="gd", lr=cfg["gd_lr"],
                init_scale=scale, max_iter=cfg["gd_max_iter"], callback=log, **S.dev)
    run.save_table("path", rows)


def _sweep_table(run, S: _Setup) -> None:
    """2. The solver against the closed form over a sweep of (lambda_W, lambda_H)."""
    K, n, lam_b = S.K, S.n, S.lams[2]
    rows = []
    for ratio in S.cfg["sweep_ratios"]:
        for kc in S.cfg["sweep_kc"]:
            c = kc / K
            lw, lh = c / math.sqrt(n) * math.sqrt(ratio), c / math.sqrt(n) / math.sqrt(ratio)
            point = fit(K, n, S.d, lw, lh, lam_b, seed=S.seed, **S.dev)
            a, s = closed_form_optimum(K, n, lw, lh)
            rec = _record(*point, (lw, lh, lam_b), global_min_value(K, n, lw, lh))
            rows.append({"ratio": ratio, "kc": kc, "lambda_W": lw, "lambda_H": lh,
                         "closed_w_norm_sq": a, "closed_s": s, **rec,
                         "rel_a": abs(rec["w_norm_sq"] - a) / a if a > 0 else math.nan,
                         "rel_s": abs(rec["s"] - s) / s if a > 0 else math.nan})
    run.save_table("sweep", rows)


def _seeds_table(run, S: _Setup) -> None:
    """3. Many random starts (L-BFGS and gradient descent): does every run end at f*?"""
    cfg = S.cfg
    rows = []
    for method, count in (("lbfgs", cfg["n_seeds"]), ("gd", cfg["gd_seeds"])):
        for seed in range(count):
            scale = cfg["seed_init_scales"][seed % len(cfg["seed_init_scales"])]
            tic = time.perf_counter()
            point = fit(S.K, S.n, S.d, *S.lams, seed=S.seed + seed, method=method, lr=cfg["gd_lr"],
                        init_scale=scale, max_iter=cfg["gd_max_iter"] if method == "gd" else 10_000,
                        **S.dev)
            rec = _record(*point, S.lams, S.f_star)
            rows.append({"method": method, "seed": seed, "init_scale": scale,
                         "seconds": time.perf_counter() - tic, **rec,
                         "rel_a": abs(rec["w_norm_sq"] - S.a_star) / S.a_star})
    run.save_table("seeds", rows)


def _hessian_table(run, S: _Setup) -> tuple[dict, dict]:
    """4. Hessian spectra at critical points of the ``hess`` instance (dense when at most 3000
    parameters, else the 8 smallest by Lanczos). Returns the points and their eigenvalues."""
    Kh, nh, dh = (S.cfg["hess"][key] for key in ("K", "n", "d"))
    lams, seed, dev = S.lams, S.seed, S.dev
    f_h = global_min_value(Kh, nh, *lams[:2])
    z = dict(dtype=torch.float64, device=S.device)
    tie = lambda m: [0] * m + list(range(1, Kh - m + 1))  # noqa: E731 - first m classes tied
    points = {"origin": (torch.zeros(Kh, dh, **z), torch.zeros(dh, nh * Kh, **z), torch.zeros(Kh, **z)),
              "global (solver)": fit(Kh, nh, dh, *lams, seed=seed, **dev),
              "global (closed form)": etf_optimum(Kh, nh, dh, *lams[:2], seed=seed, device=S.device),
              "2 classes tied": symmetric_critical_point(Kh, nh, dh, *lams, groups=tie(2), seed=seed, **dev)}
    if Kh >= 4:
        points["2 pairs tied"] = symmetric_critical_point(
            Kh, nh, dh, *lams, groups=[0, 0, 1, 1] + list(range(2, Kh - 2)), seed=seed, **dev)
        points["3 classes tied"] = symmetric_critical_point(Kh, nh, dh, *lams, groups=tie(3),
                                                            seed=seed, **dev)
    for r in sorted({1, Kh // 2, Kh - 2} - {0}):
        points[f"rank {r}"] = symmetric_critical_point(Kh, nh, dh, *lams, rank=r, seed=seed, **dev)
    size = Kh * dh + dh * nh * Kh + Kh
    k = size if size <= 3000 else 8
    rows, eigs = [], {}
    for name, point in points.items():
        eigs[name] = vals = hessian_eigs(*point, *lams, k=k)
        rows.append({"point": name, **{key: v for key, v in _record(*point, lams, f_h).items()
                                       if key in ("gap", "grad_norm", "w_norm_sq")},
                     "min_eig": vals[0], "n_negative": int((vals < -1e-8).sum()),
                     "n_zero": int((abs(vals) <= 1e-8).sum()),
                     "max_eig": float(vals[-1]) if k == size else math.nan})
    run.save_table("hessian", rows)
    run.save_arrays("hessian", names=np.array(list(eigs)), eigs=np.stack([v[:12] for v in eigs.values()]))
    return points, eigs


def _lanczos_table(run, S: _Setup, tied, tied_eigs) -> None:
    """5. Lanczos at critical points of the larger ``lanczos`` instance, never forming its
    Hessian; cross-checked against the dense spectrum ``tied_eigs`` of the tied point ``tied``
    of the ``hess`` instance."""
    lams, seed, dev = S.lams, S.seed, S.dev
    Kl, nl, dl = (S.cfg["lanczos"][key] for key in ("K", "n", "d"))
    z = dict(dtype=torch.float64, device=S.device)
    zl = (torch.zeros(Kl, dl, **z), torch.zeros(dl, nl * Kl, **z), torch.zeros(Kl, **z))
    big = {"origin": zl,
           "2 classes tied": symmetric_critical_point(Kl, nl, dl, *lams, groups=[0] + list(range(Kl - 1)),
                                                      seed=seed, **dev),
           f"rank {Kl - 2}": symmetric_critical_point(Kl, nl, dl, *lams, rank=Kl - 2, seed=seed, **dev)}
    rows = []
    for name, point in big.items():
        tic = time.perf_counter()
        vals = hessian_eigs(*point, *lams, k=3, dense_max=0, tol=1e-8)
        rows.append({"point": name, "K": Kl, "n": nl, "d": dl, "parameters": Kl * dl + dl * nl * Kl + Kl,
                     "grad_norm": gradient_norm(*point, *lams), "min_eig": vals[0],
                     "seconds": time.perf_counter() - tic,
                     "gap": float(objective(*point, *lams)) - global_min_value(Kl, nl, *lams[:2])})
    Kh, nh, dh = _shapes(*tied)
    check = hessian_eigs(*tied, *lams, k=3, dense_max=0, tol=1e-8)
    rows.append({"point": "2 classes tied (dense check)", "K": Kh, "n": nh, "d": dh,
                 "parameters": Kh * dh + dh * nh * Kh + Kh,
                 "grad_norm": math.nan, "min_eig": check[0], "seconds": math.nan,
                 "dense_min_eig": tied_eigs[0], "gap": math.nan,
                 "abs_diff": float(np.abs(check - tied_eigs[:3]).max())})
    run.save_table("lanczos", rows)


def _slice_values(center, e1, e2, coords1, coords2, shape, lams, device) -> np.ndarray:
    """f at ``center + alpha e1 + beta e2`` on the grid coords1 x coords2 (rows: beta)."""
    out = np.empty((len(coords2), len(coords1)))
    for i, beta in enumerate(coords2):
        for j, alpha in enumerate(coords1):
            theta = (center + alpha * e1 + beta * e2).to(device)
            out[i, j] = float(objective(*unpack(theta, *shape), *lams))
    return out


def _slices(run, S: _Setup, glob, tied) -> None:
    """6. Two 2-D slices of f on the ``hess`` instance: the plane through 0, the global minimizer
    ``glob`` and the tied point ``tied``; and around ``tied`` along its extreme eigenvectors."""
    lams, points = S.lams, S.cfg["slice_points"]
    shape = _shapes(*tied)
    f_h = global_min_value(shape[0], shape[1], *lams[:2])
    g, t = _theta(glob), _theta(tied)
    u = g / g.norm()
    v = t - (t @ u) * u
    v = v / v.norm()
    radius = 1.25 * max(float(g.norm()), float(t.norm()))
    grid = np.linspace(-radius, radius, points)
    bottom, neg = hessian_eigs(*tied, *lams, k=1, vectors=True)
    top, pos = hessian_eigs(*tied, *lams, k=1, which="largest", vectors=True)
    neg, pos = torch.as_tensor(neg[:, 0]), torch.as_tensor(pos[:, 0])
    lam_neg, lam_pos = bottom[0], top[0]
    # Steps along which the quadratic model changes f by -/+ half the saddle's gap to f*.
    change = 0.5 * (float(objective(*tied, *lams)) - f_h)
    unit = np.linspace(-1, 1, points)
    along_neg, along_pos = unit * math.sqrt(2 * change / -lam_neg), unit * math.sqrt(2 * change / lam_pos)
    run.save_arrays("slices", grid=grid,
                    plane=_slice_values(torch.zeros_like(u), u, v, grid, grid, shape, lams, S.device),
                    marks=np.array([[float(g @ u), float(g @ v)], [float(t @ u), float(t @ v)]]),
                    along_neg=along_neg, along_pos=along_pos, f_star=f_h, neg_eig=lam_neg, pos_eig=lam_pos,
                    saddle=_slice_values(t, neg, pos, along_neg, along_pos, shape, lams, S.device))


def _dims_table(run, S: _Setup) -> None:
    """7. L-BFGS at each feature dimension of ``dims`` (d < K - 1: no ETF fits); the smallest
    Hessian eigenvalue at one end point per distinct final value below K - 1, and the best
    configuration at d = 2."""
    K, n, lams = S.K, S.n, S.lams
    rows, geometry = [], {}
    for dim in S.cfg["dims"]:
        found = {}
        for seed in range(S.cfg["dim_seeds"]):
            point = fit(K, n, dim, *lams, seed=S.seed + seed, **S.dev)
            rec = _record(*point, lams, S.f_star)
            key = round(rec["gap"], 7)
            if key not in found:  # below K-1: Hessian at one point of each distinct final value
                found[key] = hessian_eigs(*point, *lams, k=1)[0] if dim < K - 1 else math.nan
                if dim == 2 and (not geometry or rec["gap"] < geometry["gap"]):
                    geometry = {"W": point[0].cpu().numpy(), "H": point[1].cpu().numpy(), "gap": rec["gap"]}
            rows.append({"d": dim, "seed": seed, "min_eig": found[key], **rec})
    run.save_table("dims", rows)
    if geometry:
        run.save_arrays("dim2", W=geometry["W"], means=geometry["H"].reshape(2, K, n).mean(2).T)


def landscape_experiment(run, cfg: dict, device="cpu") -> dict:
    """Chapter 2's computation: write seven tables/arrays into ``run`` and return a summary.

    ``cfg`` is a ``ufm`` preset of :func:`ncutils.config.get_preset` plus ``seed`` (an integer
    >= 0, the offset of every random start), so that the seed is part of the config hash; the
    ``device`` is not (it changes the speed and at most the last digits). ``run`` is a
    :class:`ncutils.store.Run`. The parts, each timed:

    1. ``path`` (table): collapse metrics and the gap to f* along gradient-descent paths.
    2. ``sweep`` (table): L-BFGS against :func:`closed_form_optimum` over (lambda_W, lambda_H).
    3. ``seeds`` (table): the end points of many random-start runs (L-BFGS and GD).
    4. ``hessian`` (table and arrays): Hessian spectra at the origin, the global minimizer and
       critical points built by :func:`symmetric_critical_point`, on the ``hess`` instance.
    5. ``lanczos`` (table): Lanczos on the larger ``lanczos`` instance, plus a dense cross-check.
    6. ``slices`` (arrays): two 2-D slices of f on the ``hess`` instance.
    7. ``dims`` (table) and ``dim2`` (arrays): L-BFGS at feature dimensions ``dims``.

    On the CPU it runs on one thread (the problems are tiny; more threads only oversubscribe a
    shared machine) and restores the thread count afterwards. Returns ``{"f_star", "w_norm_sq",
    "s", "seconds"}``: the closed-form optimum of the main instance and seconds per part.
    """
    if "seed" not in cfg:
        raise ValueError("cfg must hold 'seed' (an integer >= 0), e.g. "
                         "dict(config.get_preset('ufm', preset), seed=0)")
    K, n, d = _sizes(cfg["K"], cfg["n"], cfg["d"])
    lams = _lambdas(cfg["lambda_W"], cfg["lambda_H"], cfg["lambda_b"])
    a_star, s_star = closed_form_optimum(K, n, *lams[:2])
    S = _Setup(cfg=cfg, K=K, n=n, d=d, lams=lams, f_star=global_min_value(K, n, *lams[:2]),
               a_star=a_star, seed=_int(cfg["seed"], "cfg['seed']", 0), device=device)
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)  # tiny problems: one thread beats oversubscribing a shared CPU
    timings = {}

    def timed(name, part, *args):
        start = time.perf_counter()
        out = part(run, S, *args)
        timings[name] = time.perf_counter() - start
        return out

    try:
        timed("path", _path_table)
        timed("sweep", _sweep_table)
        timed("seeds", _seeds_table)
        points, eigs = timed("hessian", _hessian_table)
        tied = points["2 classes tied"]
        timed("lanczos", _lanczos_table, tied, eigs["2 classes tied"])
        timed("slices", _slices, points["global (solver)"], tied)
        timed("dims", _dims_table)
    finally:
        torch.set_num_threads(threads)
    return {"f_star": S.f_star, "w_norm_sq": a_star, "s": s_star,
            "seconds": {key: round(v, 1) for key, v in timings.items()}}


LANDSCAPE_LABEL = "landscape"


def landscape_config(preset: str, seed: int = 0) -> dict:
    """The config of chapter 2's run at ``preset``: the ``ufm`` preset plus ``seed`` (hashed)."""
    from .config import get_preset

    return dict(get_preset("ufm", preset), seed=seed)


def run_landscape(preset: str, seed: int = 0, device=None, force: bool = False):
    """Load or compute chapter 2's :func:`landscape_experiment` at ``preset``; the Run."""
    from .store import load_or_run

    cfg = landscape_config(preset, seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_or_run("ufm", preset, cfg, lambda r: landscape_experiment(r, cfg, device=device),
                       label=LANDSCAPE_LABEL, force=force, device=device)
