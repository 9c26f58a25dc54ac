# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The unconstrained features model: every global minimizer is a simplex ETF, every other critical point a strict saddle
#
# {cite:t}`zhu2021geometric` replace the network below the last layer by free variables: each
# training sample gets its own feature vector, optimized together with the classifier. For this
# *unconstrained features model* (UFM) with the cross-entropy loss and weight decay they prove two
# things. **Theorem 3.1:** if the feature dimension is $d \ge K-1$, every global minimizer
# exhibits neural collapse exactly: the features of a class collapse to one vector (NC1), the
# classifier rows form a simplex equiangular tight frame (ETF) of equal norms (NC2), the features
# are a fixed multiple of their class's classifier row (NC3), and the bias vanishes when it is
# regularized. **Theorem 3.2:** if $d > K$, every critical point that is not a global minimizer is
# a *strict saddle*, a point whose Hessian has a negative eigenvalue, so the landscape has no
# spurious local minima and gradient methods from a random start reach the global minimum.
#
# This chapter reproduces both claims by computation: it derives the size of the global
# minimizer in closed form and checks the solvers against it to $10^{-6}$, runs many random starts,
# builds non-global critical points and computes their Hessian spectra, and shows what breaks when
# $d < K-1$.

# %% tags=["remove-cell"]
# Colab only: a shallow clone of the book (code and committed results), an editable install,
# and its chapters/ folder as the working directory, so committed runs are loaded, not retrained.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    REPO_URL, BOOK = "https://github.com/ncbook/neural-collapse-book", "/content/neural-collapse-book"
    if not os.path.isdir(os.path.join(BOOK, ".git")):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", REPO_URL, BOOK], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--editable", BOOK], check=True)
    sys.path.insert(0, BOOK)  # importable at once, without restarting the runtime
    os.chdir(os.path.join(BOOK, "chapters"))

# %% tags=["parameters"]
PRESET = "cpu"
SEED = 0
FORCE_RUN = False

# %% [markdown]
# ## The model
#
# With $K$ classes of $n$ samples each ($N = nK$), features $H = [h_{k,i}] \in \mathbb R^{d\times N}$
# (sample $i$ of class $k$), classifier $W \in \mathbb R^{K\times d}$ with rows $w_k^\top$ and bias
# $b \in \mathbb R^K$, the UFM objective of {cite:t}`zhu2021geometric` is
#
# $$
# f(W,H,b) = \frac1N \sum_{k=1}^K\sum_{i=1}^n \mathcal L_{\mathrm{CE}}(W h_{k,i} + b,\, y_k)
# + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2 + \frac{\lambda_b}{2}\|b\|_2^2 .
# $$
#
# The loss is averaged over the samples but the feature penalty is on the *sum* over samples; this
# is why $n$ appears in every formula below. `ncutils.ufm.objective` evaluates $f$ (samples ordered
# class by class), `ncutils.ufm.fit` minimizes it in float64 with L-BFGS (strong Wolfe line search)
# or full-batch gradient descent, from a random start whose classifier rows and feature columns have
# norm about `init_scale`.
#
# ## The global minimizer in closed form
#
# Theorem 3.1 fixes the *shape* of every global minimizer: $w_k = \sqrt a\, u_k$ with
# $u_1,\dots,u_K$ a unit simplex ETF ($u_k^\top u_j = -\tfrac1{K-1}$ for $k\ne j$),
# $h_{k,i} = s\,w_k$ and $b=0$. Its *size* $(a, s)$ follows from a scalar problem. A sample of
# class $k$ has logits $w_j^\top h_{k,i} = s\,a\,u_j^\top u_k$, that is $t$ for the true class and
# $-t/(K-1)$ for the others, where $t = s a$. Hence
#
# $$
# \mathcal L_{\mathrm{CE}} = \log\bigl(1 + (K-1)\,e^{-Kt/(K-1)}\bigr), \qquad
# \tfrac{\lambda_W}{2}\|W\|_F^2 + \tfrac{\lambda_H}{2}\|H\|_F^2
# = \tfrac K2\bigl(\lambda_W a + n\lambda_H s^2 a\bigr) = \tfrac K2\Bigl(\lambda_W a + \frac{n\lambda_H t^2}{a}\Bigr).
# $$
#
# For a fixed margin $t$ the penalty is smallest (by the AM-GM inequality) at
# $a = t\sqrt{n\lambda_H/\lambda_W}$, where it equals $K c\, t$ with
#
# $$
# c = \sqrt{n\,\lambda_W\lambda_H}, \qquad s = \frac ta = \sqrt{\frac{\lambda_W}{n\lambda_H}} .
# $$
#
# What remains is the convex function $\varphi(t) = \log(1 + (K-1)E) + Kct$ with
# $E = e^{-Kt/(K-1)}$, whose derivative is $\varphi'(t) = K\bigl(c - E/(1+(K-1)E)\bigr)$.
# It vanishes at $E = c/(1-(K-1)c)$, which is a point $t > 0$ exactly when $c < 1/K$:
#
# $$
# t^\star = \frac{K-1}{K}\log\frac{1-(K-1)c}{c}, \qquad
# \|w_k\|^2 = a^\star = t^\star\sqrt{\frac{n\lambda_H}{\lambda_W}}, \qquad
# \|h_{k,i}\|^2 = s^2 a^\star = t^\star\sqrt{\frac{\lambda_W}{n\lambda_H}},
# $$
#
# $$
# f^\star = -\log\bigl(1-(K-1)c\bigr) + (K-1)\,c\,\log\frac{1-(K-1)c}{c} .
# $$
#
# When $c = \sqrt{n\lambda_W\lambda_H} \ge 1/K$, $\varphi$ increases on $t \ge 0$: the minimizer is
# $W = H = 0$ with $f^\star = \log K$ (and $f^\star$ is continuous at $c = 1/K$). The ratio
# $s$ does not depend on $K$ or on the regime; `ncutils.ufm.closed_form_optimum(K, n, lambda_W,
# lambda_H)` returns $(a^\star, s)$ (with $s$ kept at its formula in the zero regime, the limit
# from below) and `global_min_value` returns $f^\star$.
#
# **The origin.** At $W=H=0$, $b=0$ every sample predicts $1/K$ for every class, so the gradient
# vanishes (the classes are balanced). To second order,
#
# $$
# f \approx \log K + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2
# - \frac1N\langle W,\, Y_c H^\top\rangle
# + \frac12\, b^\top\Bigl(\frac1K\bigl(I-\tfrac1K\mathbf 1\mathbf 1^\top\bigr) + \lambda_b I\Bigr)b ,
# $$
#
# where $Y_c = Y - \tfrac1K\mathbf 1\mathbf 1^\top$ is the centered one-hot label matrix, whose
# nonzero singular values all equal $\sqrt n$. The smallest Hessian eigenvalue at the origin is
# therefore
#
# $$
# \lambda_{\min}(0) = \frac{\lambda_W+\lambda_H}{2} - \sqrt{\Bigl(\frac{\lambda_W-\lambda_H}{2}\Bigr)^2 + \frac{1}{K^2 n}},
# $$
#
# with multiplicity $d(K-1)$; it is negative exactly when $\sqrt{n\lambda_W\lambda_H} < 1/K$. The
# origin is a strict saddle precisely in the regime where a nonzero ETF minimizer exists, and the
# global minimizer otherwise (`ncutils.ufm.origin_min_eig`).

# %%
import math

import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.ticker import MaxNLocator

import pandas as pd
from IPython.display import Markdown

from ncutils import ufm
from ncutils.plotting import figure_legend, glue, new_figure, provenance_table, style_table

cfg = ufm.landscape_config(PRESET, seed=SEED)  # the ufm preset plus the seed (part of the config hash)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
K, n, d = cfg["K"], cfg["n"], cfg["d"]
LAMS = (cfg["lambda_W"], cfg["lambda_H"], cfg["lambda_b"])
F_STAR = ufm.global_min_value(K, n, *LAMS[:2])
A_STAR, S_STAR = ufm.closed_form_optimum(K, n, *LAMS[:2])
Markdown(f"**Preset `{PRESET}`:** K = {K} classes, n = {n} samples a class, d = {d} features, "
         f"λ_W = {LAMS[0]:g}, λ_H = {LAMS[1]:g}, λ_b = {LAMS[2]:g} (so K·c = {K * math.sqrt(n * LAMS[0] * LAMS[1]):.3g}). "
         f"Closed form: ‖w_k‖² = {A_STAR:.6g}, s = {S_STAR:.6g}, f* = {F_STAR:.10g}.")

# %% [markdown]
# ## The computations
#
# Seven computations make up this chapter: collapse along gradient-descent paths, the solver
# against the closed form over a sweep of the weight decay, many random starts, Hessian spectra at
# critical points, Lanczos on a larger instance, two slices of the landscape and feature dimensions
# below $K-1$ (`ncutils.ufm.landscape_experiment` runs them all). `SEED` offsets every random start.
# The table after the next paragraph gives the time each took.
#
# **Constructed critical points.** Besides the origin, two families of non-global critical
# points come from the symmetries of $f$. Swapping two classes together with their samples leaves
# $f$ unchanged, and so does flipping the sign of one coordinate of all $w_k$ and $h_{k,i}$. If
# $f$ is invariant under an orthogonal map $g$, then $\nabla f(gx) = g\nabla f(x)$, so at a point $x$
# fixed by $g$ the gradient is fixed by $g$ as well: it lies in the fixed-point subspace. A critical
# point of $f$ restricted to that subspace is therefore a critical point of $f$ (the *principle of
# symmetric criticality*, {cite:p}`palais1979principle`). `ncutils.ufm.symmetric_critical_point`
# minimizes $f$ on the subspace where the classes of a group share their classifier row, bias and
# features ("tied" classes, which can never be separated) and/or only the first $r$ coordinates are
# used ("rank $r$", which cannot hold an ETF when $r < K-1$). The full gradient is then measured,
# not assumed, to be zero.

# %%
run = ufm.run_landscape(PRESET, seed=SEED, device=DEVICE, force=FORCE_RUN)  # load or compute
provenance_table([run])

# %% tags=["hide-input"]
steps = {"path": "gradient-descent paths", "sweep": "closed-form sweep", "seeds": "random starts",
         "hessian": "dense Hessians", "lanczos": "Lanczos", "slices": "landscape slices",
         "dims": "low feature dimensions"}
seconds = run.info["summary"]["seconds"]
style_table(pd.DataFrame([{"computation": steps.get(k, k), "seconds": v} for k, v in seconds.items()]),
            formats={"seconds": "{:.1f}"}, caption=f"Wall time of each computation, {sum(seconds.values()):.0f} s in all.")

# %% [markdown]
# ## Collapse along the optimization path
#
# Full-batch gradient descent (step size from the preset) from random starts with classifier rows
# and features of norm about 1, and from starts of norm $10^{-3}$, next to the origin saddle.
# Every collapse metric of `ncutils.metrics.collapse_metrics`, computed on the features $H^\top$,
# the labels, $W$ and $b$, decays to numerical zero, as does the gap to the closed-form
# $f^\star$. The runs from near zero first sit on a plateau: they leave the saddle along its
# negative-curvature directions.

# %% mystnb={"figure": {"caption": "Gradient descent on the UFM from random starts (three seeds per start norm, one colour per start norm): the gap $f - f^\\star$ to the closed-form optimum, NC1 ($\\mathrm{Tr}(\\Sigma_W\\Sigma_B^+)/K$), NC2 (mean $|\\cos + 1/(K-1)|$ over pairs of classifier rows, solid, and of centered class means, dashed) and NC3 (self-duality $\\|W^\\top/\\|W\\|_F - M/\\|M\\|_F\\|_F^2$) against the iteration. Values are floored at $10^{-16}$.", "name": "fig-02-path"}} tags=["hide-input"]
path = run.table("path")
fig, axes = new_figure(2, 2, width=3.5, height=2.5)
colors = {s: f"C{i}" for i, s in enumerate(sorted(path.init_scale.unique(), reverse=True))}
panels = (("gap", "$f - f^\\star$"), ("nc1", "NC1"), ("maxangle_classifiers", "NC2 (angles)"),
          ("self_duality", "NC3 (self-duality)"))
for ax, (key, title) in zip(axes.ravel(), panels):
    for (scale, seed), grp in path.groupby(["init_scale", "seed"]):
        label = f"start norm {scale:g}" if seed == 0 else None
        if key == "maxangle_classifiers":
            label = f"start norm {scale:g}, classifier rows" if seed == 0 else None
        ax.loglog(grp.iteration + 1, grp[key].abs().clip(lower=1e-16), color=colors[scale], lw=1.2, label=label)
        if key == "maxangle_classifiers":
            ax.loglog(grp.iteration + 1, grp.maxangle_means.clip(lower=1e-16), color=colors[scale], lw=1.2,
                      ls="--", label=f"start norm {scale:g}, class means" if seed == 0 else None)
    ax.set(title=title, xlabel="iteration + 1" if ax in axes[1] else None)
figure_legend(fig, ax=axes[1, 0], ncol=2)
fig

# %% [markdown]
# ## The solver meets the closed form
#
# L-BFGS (float64, stopped when no gradient entry exceeds $10^{-10}$) over a sweep of $K c =
# K\sqrt{n\lambda_W\lambda_H}$ from 0.03 to 2 and three ratios $\lambda_W/\lambda_H$. Every
# solution has equal classifier norms and features equal to $s\,w_k$; the largest relative error
# of $\|w_k\|^2$ against $a^\star$ is {glue:text}`c02_sweep_rel_a:.1e` and of
# $\|h\|/\|w\|$ against $s$ is {glue:text}`c02_sweep_rel_s:.1e` (nonzero regime), and above
# $Kc = 1$ the largest $\|w_k\|^2$ found is {glue:text}`c02_sweep_zero:.1e`.

# %% mystnb={"figure": {"caption": "Left: the classifier norm $\\|w_k\\|^2$ found by L-BFGS (markers) and the closed form $a^\\star$ (lines) against $K\\sqrt{n\\lambda_W\\lambda_H}$; the minimizer is $W = H = 0$ beyond 1 (dotted). Right: relative errors of $\\|w_k\\|^2$ (circles) and of $s = \\|h\\|/\\|w\\|$ (crosses) in the nonzero regime; the dashed line is $10^{-6}$.", "name": "fig-02-closed-form"}} tags=["hide-input"]
sweep = run.table("sweep")
nonzero = sweep[sweep.kc < 1]
glue("c02_sweep_rel_a", float(nonzero.rel_a.max()))
glue("c02_sweep_rel_s", float(nonzero.rel_s.max()))
glue("c02_sweep_zero", float(sweep[sweep.kc > 1].w_norm_sq.max()) if (sweep.kc > 1).any() else 0.0)
fig, axes = new_figure(2, 1, width=3.4, height=2.6)
kc_line = np.geomspace(sweep.kc.min(), sweep.kc.max(), 300)
for i, (ratio, grp) in enumerate(sweep.groupby("ratio")):
    c_line = kc_line / K
    closed = [ufm.closed_form_optimum(K, n, c / math.sqrt(n) * math.sqrt(ratio), c / math.sqrt(n) / math.sqrt(ratio))[0]
              for c in c_line]
    axes[0, 0].plot(kc_line, closed, color=f"C{i}", lw=1, label=f"$\\lambda_W/\\lambda_H = {ratio:g}$")
    axes[0, 0].plot(grp.kc, grp.w_norm_sq, "o", color=f"C{i}", ms=4)
    nz = grp[grp.kc < 1]
    axes[0, 1].semilogy(nz.kc, nz.rel_a.clip(lower=1e-16), "o", color=f"C{i}", ms=4)
    axes[0, 1].semilogy(nz.kc, nz.rel_s.clip(lower=1e-16), "x", color=f"C{i}", ms=5)
axes[0, 0].axvline(1, color="0.5", ls=":")
axes[0, 0].set(xscale="log", xlabel="$K\\sqrt{n\\lambda_W\\lambda_H}$", ylabel="$\\|w_k\\|^2$")
figure_legend(fig, ncol=3)
axes[0, 1].axhline(1e-6, color="0.5", ls="--")
axes[0, 1].set(xscale="log", xlabel="$K\\sqrt{n\\lambda_W\\lambda_H}$", ylabel="relative error")
fig

# %% [markdown]
# ## No spurious minima: many random starts
#
# L-BFGS and gradient descent from random starts of norm $10^{-3}$ (next to the origin saddle) up
# to 3. Of {glue:text}`c02_seeds_total` runs, {glue:text}`c02_seeds_reached` end within $10^{-9}$
# of $f^\star$; the largest gap is {glue:text}`c02_seeds_max_gap:.1e` and the largest relative
# error of $\|w_k\|^2$ is {glue:text}`c02_seeds_rel_a:.1e`.

# %% mystnb={"figure": {"caption": "The end points of random-start runs. Left: $|f - f^\\star|$ (floored at $10^{-17}$) per run, by solver and start norm. Right: the collapse metrics at the end of every run (floored at $10^{-30}$): NC1, equal norms of the classifier rows (std/mean), their angles (mean $|\\cos + 1/(K-1)|$) and self-duality (NC3); circles L-BFGS, triangles gradient descent.", "name": "fig-02-seeds"}} tags=["hide-input"]
seeds = run.table("seeds")
glue("c02_seeds_total", len(seeds))
glue("c02_seeds_reached", int((seeds.gap.abs() < 1e-9).sum()))
glue("c02_seeds_max_gap", float(seeds.gap.abs().max()))
glue("c02_seeds_rel_a", float(seeds.rel_a.max()))
fig, axes = new_figure(2, 1, width=3.4, height=2.6)
rng = np.random.default_rng(0)
scales = sorted(seeds.init_scale.unique())
metrics = {"nc1": "NC1", "equinorm_classifiers": "NC2 norms", "maxangle_classifiers": "NC2 angles",
           "self_duality": "NC3"}
for j, method in enumerate(("lbfgs", "gd")):
    for i, scale in enumerate(scales):
        grp = seeds[(seeds.method == method) & (seeds.init_scale == scale)]
        x = j + 0.18 * (i - (len(scales) - 1) / 2) + rng.uniform(-0.04, 0.04, len(grp))
        axes[0, 0].semilogy(x, grp.gap.abs().clip(lower=1e-17), "o", color=f"C{i}", ms=3,
                            label=f"init norm {scale:g}" if j == 0 else None)
        for m, key in enumerate(metrics):
            x = m + 0.3 * (j - 0.5) + rng.uniform(-0.08, 0.08, len(grp))
            axes[0, 1].semilogy(x, grp[key].abs().clip(lower=1e-30), "o^"[j], color=f"C{i}", ms=3)
axes[0, 0].set(xticks=[0, 1], xticklabels=["L-BFGS", "GD"], ylabel="$|f - f^\\star|$", ylim=(1e-17, 1))
handles, labels = axes[0, 0].get_legend_handles_labels()
for marker, name in (("o", "L-BFGS"), ("^", "gradient descent")):
    handles.append(axes[0, 1].plot([], [], marker, color="0.3", ms=4)[0])
    labels.append(name)
figure_legend(fig, handles, labels, ncol=3)
axes[0, 1].set_xticks(range(len(metrics)), list(metrics.values()))
axes[0, 1].set(ylabel="value at the end of the run")
fig

# %% [markdown]
# ## Strict saddles: Hessian spectra at critical points
#
# On a small instance the Hessian (all $Kd + dN + K$ parameters) is formed with
# `torch.func.hessian` and diagonalized. The table lists each critical point's gradient norm, its
# gap to $f^\star$, its smallest eigenvalue and the number of negative (below $-10^{-8}$) and
# zero (within $10^{-8}$) eigenvalues. Every constructed point has gradient norm at most
# {glue:text}`c02_saddle_grad:.1e` and a negative eigenvalue, the largest of their smallest
# eigenvalues being {glue:text}`c02_saddle_eig:.2e`. At the origin the computed
# $\lambda_{\min}$ is {glue:text}`c02_origin_eig:.6e` against {glue:text}`c02_origin_formula:.6e`
# from the formula above. At the global minimizer the smallest eigenvalue is
# {glue:text}`c02_global_eig:.1e` (solver) and {glue:text}`c02_global_exact_eig:.1e` (closed
# form): the only zero eigenvalues are the rotations $W \mapsto WQ^\top$, $H \mapsto QH$ that
# leave $f$ unchanged, {glue:text}`c02_rotations` of them
# ($\binom d2 - \binom{d-K+1}2$), and none is negative.
#
# A tied pair of classes has the origin's curvature $\lambda_{\min}(0)$ exactly: in a coordinate
# the point does not use, pulling the two tied classes apart costs the same as leaving the origin.

# %%
hess = run.table("hessian")
saddles = hess[~hess.point.str.startswith("global")]
Kh, nh, dh = (cfg["hess"][key] for key in ("K", "n", "d"))
glue("c02_saddle_grad", float(saddles.grad_norm.max()))
glue("c02_saddle_eig", float(saddles.min_eig.max()))
glue("c02_origin_eig", float(hess.set_index("point").min_eig["origin"]))
glue("c02_origin_formula", ufm.origin_min_eig(Kh, nh, *LAMS[:2]))
glue("c02_global_eig", float(hess.set_index("point").min_eig["global (solver)"]))
glue("c02_global_exact_eig", float(hess.set_index("point").min_eig["global (closed form)"]))
glue("c02_rotations", dh * (dh - 1) // 2 - (dh - Kh + 1) * (dh - Kh) // 2)
style_table(hess, formats={"gap": "{:.2e}", "grad_norm": "{:.1e}", "w_norm_sq": "{:.4g}", "min_eig": "{:.3e}",
                             "max_eig": "{:.3g}"},
            headers={"point": "critical point", "gap": "f − f*", "grad_norm": "‖∇f‖", "w_norm_sq": "mean ‖w_k‖²",
                     "min_eig": "λ_min", "n_negative": "# negative", "n_zero": "# zero", "max_eig": "λ_max"})

# %% [markdown]
# For larger problems the Hessian is never formed: `ncutils.ufm.hessian_eigs` runs Lanczos
# (`scipy.sparse.linalg.eigsh`) on Hessian-vector products, forward-over-reverse differentiation
# with `torch.func`. On the instance below (its dense Hessian would take
# {glue:text}`c02_lanczos_gb:.1f` GB) the origin's smallest eigenvalue is
# {glue:text}`c02_lanczos_origin:.6e` against {glue:text}`c02_lanczos_formula:.6e` from the
# formula. On the small instance, at the point with two tied classes, the three smallest
# eigenvalues from Lanczos and from the dense spectrum (the smallest is
# {glue:text}`c02_check_eig:.6e`) differ by at most {glue:text}`c02_check_diff:.1e`.

# %% mystnb={"figure": {"caption": "Left: the twelve smallest Hessian eigenvalues at each critical point of the small instance (symmetric-log scale, linear within $\\pm 10^{-8}$); the dashed line is the origin's $\\lambda_{\\min}(0)$ from the formula. Right: the smallest eigenvalue found by Lanczos on Hessian-vector products at critical points of the larger instance.", "name": "fig-02-hessian"}} tags=["hide-input"]
lanczos = run.table("lanczos")
big = lanczos[~lanczos.point.str.contains("check")]
Kl, nl = int(big.K.iloc[0]), int(big.n.iloc[0])
glue("c02_lanczos_gb", float(big.parameters.iloc[0]) ** 2 * 8 / 1e9)
glue("c02_lanczos_origin", float(big.set_index("point").min_eig["origin"]))
glue("c02_lanczos_formula", ufm.origin_min_eig(Kl, nl, *LAMS[:2]))
row = lanczos[lanczos.point.str.contains("check")].iloc[0]
glue("c02_check_eig", float(row.dense_min_eig))
glue("c02_check_diff", float(row.abs_diff))
spec = run.arrays("hessian")
fig, axes = new_figure(2, 1, width=3.6, height=2.9)
ax = axes[0, 0]
for i, (name, vals) in enumerate(zip(spec["names"], spec["eigs"])):
    ax.plot(np.full(len(vals), i) + np.linspace(-0.2, 0.2, len(vals)), vals, "o", ms=3,
            color="C2" if str(name).startswith("global") else "C3")
ax.axhline(ufm.origin_min_eig(Kh, nh, *LAMS[:2]), color="0.5", ls="--", lw=1)
ax.set_yscale("symlog", linthresh=1e-8, linscale=2)
ax.set_yticks([-1e-1, -1e-4, -1e-8, 0, 1e-8, 1e-4, 1e-1])
ax.set_xticks(range(len(spec["names"])), [str(s) for s in spec["names"]], rotation=60, ha="right")
ax.set_ylabel("Hessian eigenvalue")
ax = axes[0, 1]
ax.bar(range(len(big)), big.min_eig, color="C3")
ax.axhline(ufm.origin_min_eig(Kl, nl, *LAMS[:2]), color="0.5", ls="--", lw=1)
ax.set_xticks(range(len(big)), big.point, rotation=30, ha="right")
ax.set(ylabel="smallest eigenvalue (Lanczos)",
       title=f"K={Kl}, n={nl}, d={int(big.d.iloc[0])}: {int(big.parameters.iloc[0]):,} parameters")
fig

# %% [markdown]
# ## The landscape in two dimensions
#
# Left: $f$ on the plane through the origin spanned by a global minimizer $\theta^\star$ and the
# critical point with two tied classes $\theta_t$. The origin is a saddle between $\pm\theta^\star$;
# the tied point and its mirror image sit on the way. Right: $f$ around $\theta_t$ along its
# most negative and its most positive curvature directions (steps scaled so that the quadratic
# model changes $f$ by the same amount along both): a saddle, not a minimum. The black line is the
# level set $f = f(\theta_t)$.

# %% mystnb={"figure": {"caption": "Two slices of the UFM landscape on the Hessian instance. Left: $f - f^\\star$ on the plane through $0$, $\\theta^\\star$ (star, global minimizer) and $\\theta_t$ (triangle, two classes tied), with their mirror images. Right: $f - f(\\theta_t)$ around $\\theta_t$ along the Hessian's most negative (horizontal) and most positive (vertical) eigenvectors; the black line is $f = f(\\theta_t)$.", "name": "fig-02-slice"}} tags=["hide-input"]
sl = run.arrays("slices")
fig, axes = new_figure(2, 1, width=3.3, height=3.0)
ax = axes[0, 0]
gap = sl["plane"] - float(sl["f_star"])
cs = ax.contourf(sl["grid"], sl["grid"], np.log10(gap + 1e-6), levels=20, cmap="viridis")
fig.colorbar(cs, ax=ax, label="$\\log_{10}(f - f^\\star)$")
for sign in (1, -1):
    ax.plot(*(sign * sl["marks"][0]), "*", color="w", ms=10, mec="k")
    ax.plot(*(sign * sl["marks"][1]), "^", color="C3", ms=7, mec="k")
ax.plot(0, 0, "o", color="C1", ms=6, mec="k")
ax.set(xlabel="along $\\theta^\\star$", ylabel="along $\\theta_t$ (orthogonalized)", aspect="equal")
ax = axes[0, 1]
mid = len(sl["along_neg"]) // 2
rel = sl["saddle"] - sl["saddle"][mid, mid]
cs = ax.contourf(sl["along_neg"], sl["along_pos"], rel, levels=21, cmap="RdBu_r",
                 norm=TwoSlopeNorm(0.0, rel.min(), rel.max()))
ax.contour(sl["along_neg"], sl["along_pos"], rel, levels=[0.0], colors="k", linewidths=0.8)
fig.colorbar(cs, ax=ax, label="$f - f(\\theta_t)$", format="%.2f")
ax.plot(0, 0, "^", color="C3", ms=7, mec="k")
ax.set(xlabel=f"step along eigenvalue {float(sl['neg_eig']):.2e}",
       ylabel=f"step along eigenvalue {float(sl['pos_eig']):.2e}")
fig

# %% [markdown]
# ## When $d < K-1$: no ETF fits
#
# Theorem 3.1 needs $d \ge K-1$. Below that the same solver, from {glue:text}`c02_dim_seeds`
# random starts per dimension, ends above the ETF's $f^\star$, which can no longer be attained,
# and at some dimensions the classifier rows no longer have equal norms. NC1 still holds exactly
# (largest NC1 {glue:text}`c02_dim_nc1:.0e`): for fixed $(W, b)$ the objective is strictly convex
# in each feature, so at *any* critical point all features of a class coincide. The landscape
# also stops being benign. At {glue:text}`c02_dim_multi` of the {glue:text}`c02_dim_low` dimensions
# below $K-1$ the starts end at different values (at $d = 2$ they spread over
# {glue:text}`c02_dim2_spread:.1e`), all at points with zero gradient (at most
# {glue:text}`c02_dim_grad:.0e`) whose Hessian has no negative eigenvalue beyond the noise level
# seen at the global minimizer (the smallest one computed is {glue:text}`c02_dim_min_eig:.0e`): second-order
# critical points with different values, which a gradient method does not leave. Padded with zero
# coordinates to $d > K$ such a point is again a strict saddle: the "rank $r$" point of the
# Hessian table is the end point of an L-BFGS run at $d = r$ (the same random start), padded with
# zeros, and for $r =$ {glue:text}`c02_rank_r` its smallest eigenvalue is
# {glue:text}`c02_rank_eig:.2e` once the extra coordinates are free.

# %% mystnb={"figure": {"caption": "L-BFGS from several random starts per feature dimension $d$ ($K = 10$ at the `cpu` preset; dotted: $d = K-1$). Left: the gap to the ETF optimum $f^\\star$, attainable only for $d \\ge K-1$. Middle: the gap of each run to the best run at the same $d$ (values below $10^{-12}$ drawn at $10^{-12}$). Right: the best configuration found at $d = 2$: classifier rows $w_k$ (arrows) and class means (dots, scaled to the longest arrow), colored by class.", "name": "fig-02-low-dim"}} tags=["hide-input"]
dims = run.table("dims")
dims["to_best"] = dims.gap - dims.groupby("d").gap.transform("min")
low = dims[dims.d < K - 1]
spread = low.groupby("d").to_best.max()
glue("c02_dim_seeds", int(cfg["dim_seeds"]))
glue("c02_dim_nc1", float(dims.nc1.abs().max()))
glue("c02_dim_low", int(len(spread)))
glue("c02_dim_multi", int((spread > 1e-6).sum()))
glue("c02_dim_grad", float(low.grad_norm.max()) if len(low) else 0.0)
glue("c02_dim_min_eig", float(low.min_eig.min()) if len(low) else 0.0)
glue("c02_dim2_spread", float(spread.get(2, 0.0)))
rank_rows = hess[hess.point.str.startswith("rank")]
r_max = max(int(p.split()[1]) for p in rank_rows.point)
glue("c02_rank_r", r_max)
glue("c02_rank_eig", float(hess.set_index("point").min_eig[f"rank {r_max}"]))
fig, axes = new_figure(3, 1, width=2.9, height=2.8)
jitter = np.random.default_rng(1).uniform(-0.15, 0.15, len(dims))
for ax, key, label in ((axes[0, 0], "gap", "$f - f^\\star$"), (axes[0, 1], "to_best", "$f - \\min_{\\mathrm{starts}} f$")):
    ax.semilogy(dims.d + jitter, dims[key].clip(lower=1e-12), "o", ms=3)
    ax.axvline(K - 1, color="0.5", ls=":")
    ax.set(xlabel="feature dimension $d$", ylabel=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
ax = axes[0, 2]
try:
    geo = run.arrays("dim2")
    W2, means = geo["W"], geo["means"]
    means = means / np.linalg.norm(means, axis=1).max() * np.linalg.norm(W2, axis=1).max()
    for k in range(K):
        ax.annotate("", xy=W2[k], xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=f"C{k % 10}"))
        ax.plot(*means[k], "o", color=f"C{k % 10}", ms=5)
    lim = 1.15 * np.abs(np.vstack([W2, means])).max()
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title="best configuration at $d = 2$")
except FileNotFoundError:
    ax.set_axis_off()
fig

# %% [markdown]
# ## Paper vs this book
#
# | | {cite:t}`zhu2021geometric` | this book |
# |---|---|---|
# | Model | UFM with CE, weight decay on $W$, $H$ (on the sum over samples) and $b$ | the same objective, float64 |
# | Global minimizers (Thm. 3.1, $d \ge K-1$) | simplex ETF, $h_{k,i} = \sqrt{\lambda_W/(n\lambda_H)}\,w_k$, equal norms, $b = 0$ if $\lambda_b > 0$ | matched: solver vs closed form to {glue:text}`c02_sweep_rel_a:.0e` over the sweep |
# | Size of the minimizer | shape and ratio $s$ | closed form derived here: $\lVert w_k\rVert^2 = t^\star\sqrt{n\lambda_H/\lambda_W}$, zero iff $\sqrt{n\lambda_W\lambda_H} \ge 1/K$ |
# | No spurious minima, strict saddles (Thm. 3.2, $d > K$) | proved | matched: {glue:text}`c02_seeds_reached` of {glue:text}`c02_seeds_total` random starts reach $f^\star$; constructed critical points (origin, tied classes, rank $< K-1$) all have a negative Hessian eigenvalue |
# | Hessian at critical points | existence of a negative-curvature direction | computed: dense spectra and Lanczos on Hessian-vector products; origin curvature in closed form |
# | $d < K-1$ | not covered | ETF lost, NC1 kept; starts end at second-order critical points of different values (no longer benign) |
# | Sizes | theory; experiments on real networks (ResNet18 on CIFAR10: $K = 10$, $d = 512$) | `cpu`: $K = 10$, $n = 20$, $d = 12$, $\lambda = 5\cdot10^{-3}$; `paper` preset: $K = 10$, $n = 5000$, $d = 512$, $\lambda = 5\cdot10^{-4}$ (not run here) |
#
# The critical points checked are built from symmetries, so they are a sample of the non-global
# critical points, not all of them; the theorem covers the rest.

# %% tags=["remove-cell"]
for name in ("path", "sweep", "seeds", "hessian", "lanczos", "dims"):
    table = run.table(name)
    assert len(table) > 0 and np.isfinite(table.select_dtypes("number").fillna(0).to_numpy()).all(), name
assert run.arrays("slices")["plane"].shape == (cfg["slice_points"],) * 2
assert np.isfinite(run.arrays("slices")["plane"]).all()
if PRESET != "smoke":
    assert nonzero.rel_a.max() < 1e-6 and nonzero.rel_s.max() < 1e-6
    assert sweep[sweep.kc > 1].w_norm_sq.max() < 1e-8
    assert (seeds.gap.abs() < 1e-9).all() and seeds.rel_a.max() < 1e-6
    assert saddles.grad_norm.max() < 1e-6 and saddles.min_eig.max() < -1e-5 and (saddles.gap > 1e-4).all()
    assert hess.set_index("point").min_eig[["global (solver)", "global (closed form)"]].min() > -1e-8
    assert abs(hess.set_index("point").min_eig["origin"] - ufm.origin_min_eig(Kh, nh, *LAMS[:2])) < 1e-10
    assert (big.min_eig < -1e-5).all() and big.grad_norm.max() < 1e-6
    assert row.abs_diff < 1e-7
    assert (dims[dims.d >= K - 1].gap.abs() < 1e-9).all() and (low.gap > 1e-4).all()
    assert (dims.nc1.abs() < 1e-10).all() and dims.grad_norm.max() < 1e-6
