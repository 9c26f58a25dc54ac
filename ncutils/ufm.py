r"""The unconstrained features model (UFM) with cross-entropy of Zhu et al. (2021).

Features ``H`` (d x N, N = nK samples ordered class by class) are free variables next to the
classifier ``W`` (K x d) and bias ``b`` (K), and

    f(W, H, b) = (1/N) sum_i CE(W h_i + b, y_i)
                 + lambda_W/2 ||W||_F^2 + lambda_H/2 ||H||_F^2 + lambda_b/2 ||b||^2.

This module holds the objective, two solvers (full-batch gradient descent, L-BFGS), the closed
form of the global minimizer (an ETF scaled as derived in Chapter 2), critical points built on the
fixed-point subspaces of the model's symmetries, and Hessian spectra (dense through
``torch.func.hessian``; Lanczos on Hessian-vector products for large problems).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import numpy as np
import torch

from .etf import simplex_etf

__all__ = [
    "labels", "objective", "closed_form_optimum", "global_min_value", "origin_min_eig",
    "etf_optimum", "init", "fit", "symmetric_critical_point", "pack", "unpack", "gradient_norm",
    "hessian_eigs",
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
def _t_star(K: int, c: float) -> float:
    """Optimal logit margin t = a s of the scalar problem; 0 when c = sqrt(n lW lH) >= 1/K."""
    return 0.0 if K * c >= 1.0 else (K - 1) / K * math.log((1.0 - (K - 1) * c) / c)


def closed_form_optimum(K: int, n: int, lambda_W: float, lambda_H: float) -> tuple[float, float]:
    r"""``(w_norm_sq, s)`` of the global minimizer: ``||w_k||^2`` and ``s = ||h_{k,i}|| / ||w_k||``.

    With c = sqrt(n lambda_W lambda_H): s = sqrt(lambda_W / (n lambda_H)) and
    ||w_k||^2 = sqrt(n lambda_H / lambda_W) (K-1)/K log((1 - (K-1) c) / c) if c < 1/K, else 0
    (W = H = 0 is the minimizer; s is then reported as its limit). Valid for d >= K-1.
    """
    K, n = _sizes(K, n)
    lam_w, lam_h = _lambdas(lambda_W, lambda_H)
    c = math.sqrt(n * lam_w * lam_h)
    return _t_star(K, c) * math.sqrt(n * lam_h / lam_w), math.sqrt(lam_w / (n * lam_h))


def global_min_value(K: int, n: int, lambda_W: float, lambda_H: float) -> float:
    """f at the global minimizer: -log(1-(K-1)c) + (K-1) c log((1-(K-1)c)/c), or log K if c >= 1/K."""
    K, n = _sizes(K, n)
    lam_w, lam_h = _lambdas(lambda_W, lambda_H)
    c = math.sqrt(n * lam_w * lam_h)
    if K * c >= 1.0:
        return math.log(K)
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
