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
# # A fixed simplex-ETF classifier with feature dimension d = K: memory and accuracy, measured
#
# Since the learned classifier of a collapsed network is a simplex ETF anyway, {cite:t}`zhu2021geometric`
# propose to *fix* the last layer to a simplex ETF from the start and to shrink the feature dimension
# to the number of classes, $d = K$. Their claim, in the abstract: on ResNet18 this
# **"reduces memory cost by over 20% ... without sacrificing the generalization performance"**.
#
# As in the authors' setup, $d = K$ is obtained by changing only the last residual block of
# ResNet18's final stage so that it outputs $K$ channels (here both of its 3x3 convolutions, with a
# matching 1x1 shortcut); the fixed classifier is then the $K \times K$ matrix $\sqrt{K/(K-1)}\,(I_K - \tfrac1K \mathbf 1\mathbf 1^\top)$,
# whose rows are unit vectors with pairwise cosines $-1/(K-1)$. The network trains as usual; the
# classifier is a buffer that receives no gradient, no weight decay and no momentum.
#
# This chapter crosses the two changes, learned vs fixed-ETF classifier and $d = 8w$ (512 for the
# standard width $w = 64$) vs $d = K = 10$, and asks two separate questions:
#
# 1. **Memory.** "Memory" is several things; we *measure* each of them for one SGD step at batch
#    128 (and smaller): trainable parameters, bytes of parameters, gradients and momentum buffers,
#    bytes of the activations autograd saves for the backward pass (counted with
#    `torch.autograd.graph.saved_tensors_hooks`, shared storages counted once), their sum, and on a GPU
#    the allocator's peak. The measurement is `ncutils.memory`, rerun by
#    `python -m ncutils.memory --preset cpu --device cpu` (or `--device cuda`).
# 2. **Accuracy and collapse.** All four networks are trained with the paper's protocol (SGD,
#    lr 0.05, momentum 0.9, weight decay $5\cdot 10^{-4}$, batch 128, lr divided by 10 every fifth of
#    training) on MNIST and FashionMNIST, and compared on train/test accuracy and NC1.

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
ARCH = "resnet18"

# %%
import math

import numpy as np
import pandas as pd
import torch

from ncutils import config, memory, models, plotting, store, train

EXPERIMENT = "fixed_etf"
exp = config.get_preset(EXPERIMENT, PRESET)
mem_cfg = exp["memory"]
print(f"preset {PRESET!r}: memory of ResNet18 width {mem_cfg['width']} at batch sizes "
      f"{mem_cfg['batch_sizes']}; training: {exp['datasets']}, width {exp['per_arch'][ARCH]['width']}, "
      f"{exp['epochs']} epochs, {exp['n_per_class'] or 'all'} training images per class, "
      f"lr milestones {exp['lr_milestones']}")

# %% [markdown]
# ## The runs
#
# One memory measurement per device (the CPU one always; a GPU one when a GPU is present or its
# result is committed), and one training run per dataset and configuration. Committed results
# under `data/results/fixed_etf/` are loaded, never retrained.

# %%
mem_runs = {"cpu": memory.measure_preset(PRESET, "cpu", force=FORCE_RUN)}
if torch.cuda.is_available() or store.Run(EXPERIMENT, PRESET, memory.memory_config(PRESET, "cuda"),
                                          label="memory-cuda").complete:
    mem_runs["cuda"] = memory.measure_preset(PRESET, "cuda", force=FORCE_RUN)

runs = {}
for (dataset, arch, i), run in train.run_experiment(EXPERIMENT, PRESET, seed=SEED, force=FORCE_RUN).items():
    v = exp["variants"][i]
    runs[dataset, memory.variant_name(v, v["feature_dim"] or models.ARCHS[arch][1](run.config["width"]))] = run
plotting.provenance_table([*mem_runs.values(), *runs.values()])

# %% [markdown]
# ## Memory of one training step
#
# ResNet18 at its standard width 64 (11.2 M parameters), batch 128, on MNIST-shaped inputs
# (1x28x28) and CIFAR-shaped inputs (3x32x32), in float32. Bytes in MiB; the last column is the
# wall time of the measured step on this device.

# %% tags=["hide-input"]
MIB = 2 ** 20
mem = mem_runs["cpu"].table("memory")
rel = mem_runs["cpu"].table("savings")
if "cuda" in mem_runs:
    mem_gpu = mem_runs["cuda"].table("memory")
    mem["cuda_peak_bytes"] = mem_gpu["cuda_peak_bytes"].to_numpy()
    rel["cuda_peak_bytes"] = mem_runs["cuda"].table("savings")["cuda_peak_bytes"].to_numpy()
big = mem["batch"].max()
show = mem[mem["batch"] == big].copy()
for c in memory.BYTE_COLUMNS:
    show[c] = show[c] / MIB
show = show.rename(columns={"trainable_params": "trainable params", "param_bytes": "params",
                            "fixed_bytes": "buffers", "grad_bytes": "grads",
                            "optimizer_bytes": "momentum", "saved_bytes": "saved activations",
                            "total_bytes": "total", "cuda_peak_bytes": "GPU peak",
                            "step_seconds": "step (s)"})
show[["input", "batch", "variant", "trainable params", "params", "buffers", "grads", "momentum",
      "saved activations", "total", "GPU peak", "step (s)"]].style.format(precision=2, na_rep="n/a").hide()

# %% [markdown]
# The same, as the relative saving against the baseline (learned classifier, $d = 512$) of the
# same input shape and batch size; 0.20 means 20% less:

# %% tags=["hide-input"]
rel_show = rel[rel["batch"] == big].rename(columns={
    "trainable_params": "trainable params", "param_bytes": "params", "fixed_bytes": "buffers",
    "grad_bytes": "grads", "optimizer_bytes": "momentum", "saved_bytes": "saved activations",
    "total_bytes": "total", "cuda_peak_bytes": "GPU peak"})
rel_show.style.format(precision=3, na_rep="n/a").hide()

# %% mystnb={"figure": {"caption": "Measured memory of one SGD step of ResNet18 (width 64, batch 128, float32) per configuration, split into parameters, gradients, momentum buffers, buffers (BatchNorm statistics and the fixed ETF) and the activations saved for the backward pass. Left: MNIST-shaped inputs; right: CIFAR-shaped inputs.", "name": "fig-03-memory"}} tags=["hide-input"]
parts = [("param_bytes", "parameters"), ("grad_bytes", "gradients"), ("optimizer_bytes", "momentum"),
         ("fixed_bytes", "buffers"), ("saved_bytes", "saved activations")]
inputs = list(dict.fromkeys(mem["input"]))
fig, axes = plotting.new_figure(len(inputs), 1, width=3.4, height=2.9, sharey=True)
for ax, inp in zip(axes[0], inputs):
    part = mem[(mem["input"] == inp) & (mem["batch"] == big)]
    bottom = np.zeros(len(part))
    for (col, label), color in zip(parts, ["C0", "C1", "C2", "C7", "C3"]):
        vals = part[col].to_numpy() / MIB
        ax.bar(range(len(part)), vals, bottom=bottom, color=color, label=label)
        bottom += vals
    for i, total in enumerate(bottom):
        ax.text(i, total, f"{total:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(part)), [v.replace(", ", "\n") for v in part["variant"]])
    ax.set(title=f"input {inp}, batch {big}", ylabel="MiB")
fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
fig

# %% [markdown]
# Saved activations dominate at batch 128, and almost all of them come from the early, wide-image
# stages that $d = K$ does not touch: only the last block runs at 4x4 pixels with 512 channels.
# What $d = K$ removes is most of the last block's weights (two 3x3 convolutions of 512 x 512
# channels), and with them their gradients and momentum buffers. How much that is *relative to the
# whole* therefore depends on the batch size, since activations grow with the batch and the weights
# do not. We measured three batch sizes:

# %% mystnb={"figure": {"caption": "Relative saving of the fixed-ETF, d = K network against the learned, d = 512 baseline, as a function of the batch size: measured totals (markers) and the affine model fitted through them (lines: activations grow linearly with the batch, weights do not). The dashed horizontal line is the paper's 20%; the saving in parameters + gradients + momentum (dotted) does not depend on the batch.", "name": "fig-03-saving-vs-batch"}} tags=["hide-input"]
ours = rel["variant"].iloc[-1]  # the last configuration: etf, d = K
fig, axes = plotting.new_figure(1, 1, width=4.2, height=2.9)
ax = axes[0][0]
breakeven = {}
for inp, color in zip(inputs, ["C0", "C3"]):
    b_rows = mem[(mem["input"] == inp) & (mem["variant"] == mem["variant"].iloc[0])].sort_values("batch")
    o_rows = mem[(mem["input"] == inp) & (mem["variant"] == ours)].sort_values("batch")
    bs = b_rows["batch"].to_numpy()
    tb, to = b_rows["total_bytes"].to_numpy(float), o_rows["total_bytes"].to_numpy(float)
    ax.plot(bs, 1 - to / tb, "o", color=color, label=f"total, {inp} (measured)")
    sb, ib = np.polyfit(bs, tb, 1)  # total = intercept + slope * batch (exact up to rounding)
    so, io = np.polyfit(bs, to, 1)
    grid = np.geomspace(1, 1024, 200)
    ax.plot(grid, 1 - (io + so * grid) / (ib + sb * grid), "-", color=color, lw=1)
    # largest batch with a total saving of at least 20%: (ib - io) + B (sb - so) >= 0.2 (ib + B sb)
    breakeven[inp] = (ib - io - 0.2 * ib) / (0.2 * sb - (sb - so)) if 0.2 * sb > sb - so else math.inf
states = ["param_bytes", "grad_bytes", "optimizer_bytes"]
s_rows = mem[mem["batch"] == big]
state_saving = 1 - s_rows[s_rows["variant"] == ours][states].sum(axis=1).iloc[0] / \
    s_rows[s_rows["variant"] == s_rows["variant"].iloc[0]][states].sum(axis=1).iloc[0]
ax.axhline(state_saving, color="k", ls=":", lw=1, label="params + grads + momentum")
ax.axhline(0.2, color="gray", ls="--", lw=1, label="20% (paper)")
ax.set(xscale="log", xlabel="batch size", ylabel="relative saving", ylim=(0, 0.5))
ax.legend(fontsize=7)
fig

# %% tags=["remove-cell"]
at_big = rel[(rel["batch"] == big) & (rel["variant"] == ours)].set_index("input")
first_inp, last_inp = inputs[0], inputs[-1]
numbers = {"c03_batch": int(big), "c03_param_saving": float(at_big["trainable_params"].iloc[0]),
           "c03_state_saving": float(state_saving),
           "c03_saved_saving_a": float(at_big.loc[first_inp, "saved_bytes"]),
           "c03_saved_saving_b": float(at_big.loc[last_inp, "saved_bytes"]),
           "c03_total_saving_a": float(at_big.loc[first_inp, "total_bytes"]),
           "c03_total_saving_b": float(at_big.loc[last_inp, "total_bytes"]),
           "c03_breakeven_a": float(breakeven[first_inp]), "c03_breakeven_b": float(breakeven[last_inp])}
for key, value in numbers.items():
    plotting.glue(key, value)

# %% [markdown]
# **Does "over 20%" hold?** It depends on which memory is meant. Comparing the fixed-ETF, $d = K$
# network with the learned, $d = 512$ baseline:
#
# - **Parameters, and everything proportional to them (gradients, momentum buffers): yes.** The
#   network has {glue:text}`c03_param_saving:.1%` fewer trainable parameters, and parameters +
#   gradients + momentum shrink by {glue:text}`c03_state_saving:.1%`. Fixing the classifier alone
#   removes only its $512 \times 10$ weights and 10 biases (0.05%); the saving comes from $d = K$.
# - **Saved activations: no.** They fall by only {glue:text}`c03_saved_saving_a:.1%` (1x28x28) and
#   {glue:text}`c03_saved_saving_b:.1%` (3x32x32).
# - **The total of one training step at batch {glue:text}`c03_batch` (float32): no.** It falls by
#   {glue:text}`c03_total_saving_a:.1%` (1x28x28) and {glue:text}`c03_total_saving_b:.1%`
#   (3x32x32). The total saving exceeds 20% only for batches up to about
#   {glue:text}`c03_breakeven_a:.0f` (1x28x28) or {glue:text}`c03_breakeven_b:.0f` (3x32x32) images.
# - **The GPU allocator's peak:** see the next paragraph.
#
# %% tags=["hide-input"]
from IPython.display import Markdown

gpu_peak = at_big["cuda_peak_bytes"] if "cuda_peak_bytes" in at_big else pd.Series(dtype=float)
Markdown(f"On the GPU ({mem_runs['cuda'].info['device']}), the allocator's peak over the step falls by "
         f"{gpu_peak.loc[first_inp]:.1%} ({first_inp}) and {gpu_peak.loc[last_inp]:.1%} ({last_inp})."
         if len(gpu_peak) and gpu_peak.notna().all() else
         "No GPU measurement is committed yet, so the GPU peak is not reported here: on a GPU, "
         f"`python -m ncutils.memory --preset {PRESET} --device cuda` adds it (the book then shows it).")

# %% [markdown]
# The abstract does not say which memory its 20% refers to. Our measurements are consistent with the
# weights and optimizer state (where $d = K$ saves over 40%), or with a measurement at a small batch,
# but not with the whole training footprint of a batch-128 step.
#
# ## Accuracy and collapse
#
# The four configurations trained with the same protocol, seed and data. At the `cpu` preset this is
# a narrow ResNet18 (width 8: stage widths 8-64, so the default $d$ is 64), whose last block is
# changed the same way for $d = K$.

# %%
histories = {key: run.table("history") for key, run in runs.items()}
variants = list(dict.fromkeys(v for _, v in runs))
colors = {v: f"C{i}" for i, v in enumerate(variants)}

# %% mystnb={"figure": {"caption": "Test error (solid) and training error (dashed) per epoch for the four configurations. Training error is clipped at 1e-4 so that zero shows on the log axis.", "name": "fig-03-accuracy"}} tags=["hide-input"]
fig, axes = plotting.new_figure(len(exp["datasets"]), 1, width=3.4, height=2.8)
for ax, dataset in zip(axes[0], exp["datasets"]):
    for (ds, v), hist in histories.items():
        if ds == dataset:
            ax.plot(hist["epoch"], hist["test_error"], color=colors[v], label=v)
            ax.plot(hist["epoch"], hist["train_error"].clip(lower=1e-4), "--", color=colors[v], lw=1)
    ax.set(title=plotting.DATASET_NAMES.get(dataset, dataset), xlabel="epoch", ylabel="error",
           yscale="log")
axes[0][0].legend(fontsize=7)
fig

# %% mystnb={"figure": {"caption": "NC1, $\\mathrm{Tr}(\\Sigma_W \\Sigma_B^+)/K$ of the training features, at the snapshot epochs, for the four configurations.", "name": "fig-03-nc1"}} tags=["hide-input"]
plotting.metric_panels(histories, "nc1", "NC1")

# %% mystnb={"figure": {"caption": "NC3, self-duality distance between the (learned or fixed) classifier and the centered class means. With a fixed ETF this measures how well the features align with the prescribed frame.", "name": "fig-03-self-duality"}} tags=["hide-input"]
plotting.metric_panels(histories, "self_duality", "self-duality distance")

# %% tags=["hide-input"]
rows = []
for (ds, v), run in runs.items():
    h = histories[ds, v]
    s = train.tpt_summary(h)
    rows.append({"dataset": ds, "configuration": v,
                 "trainable params": run.info["summary"]["trainable_parameters"],
                 "train acc. (end)": 1 - s["train_error_end"], "test acc. (end)": s["test_acc_end"],
                 "best test acc.": 1 - h["test_error"].min(), "TPT onset (epoch)": s["tpt_epoch"],
                 "NC1 (end)": s["nc1_end"], "NCC mismatch (end)": s["ncc_mismatch_end"],
                 "minutes": run.info["wall_seconds"] / 60})
acc = pd.DataFrame(rows)
baseline = acc.groupby("dataset")["test acc. (end)"].transform("first")
acc["test acc. - baseline"] = acc["test acc. (end)"] - baseline
test_n = {ds: run.info["summary"]["test_samples"] for (ds, _), run in runs.items()}
ours_rows = acc[acc["configuration"] == ours]
base_rows = acc[acc["configuration"] == variants[0]]
learned_k = acc[acc["configuration"] == variants[2]]  # learned classifier, d = K
plotting.glue("c03_worst_gap", float(ours_rows["test acc. - baseline"].min()))
plotting.glue("c03_best_gap", float(ours_rows["test acc. - baseline"].max()))
plotting.glue("c03_lk_worst_gap", float(learned_k["test acc. - baseline"].min()))
plotting.glue("c03_lk_best_gap", float(learned_k["test acc. - baseline"].max()))
plotting.glue("c03_nc1_ours_min", float(ours_rows["NC1 (end)"].min()))
plotting.glue("c03_nc1_ours_max", float(ours_rows["NC1 (end)"].max()))
plotting.glue("c03_nc1_base_min", float(base_rows["NC1 (end)"].min()))
plotting.glue("c03_nc1_base_max", float(base_rows["NC1 (end)"].max()))
plotting.glue("c03_nc1_lk_min", float(learned_k["NC1 (end)"].min()))
plotting.glue("c03_nc1_lk_max", float(learned_k["NC1 (end)"].max()))
plotting.glue("c03_test_n", int(min(test_n.values())))
p_mean = float(acc["test acc. (end)"].mean())
plotting.glue("c03_se", math.sqrt(p_mean * (1 - p_mean) / min(test_n.values())))
plotting.glue("c03_train_minutes", float(acc["minutes"].sum()))
plotting.glue("c03_width", int(exp["per_arch"][ARCH]["width"]))
acc.style.format(precision=4, na_rep="not reached").format("{:,}", subset=["trainable params"]).format(
    "{:.1f}", subset=["minutes"]).format("{:.0f}", subset=["TPT onset (epoch)"], na_rep="not reached").hide()

# %% [markdown]
# Against the learned, default-$d$ baseline, the fixed-ETF $d = K$ network's final test accuracy
# differs by {glue:text}`c03_worst_gap:+.4f` to {glue:text}`c03_best_gap:+.4f` across the datasets;
# shrinking $d$ alone, with a learned classifier, gives {glue:text}`c03_lk_worst_gap:+.4f` to
# {glue:text}`c03_lk_best_gap:+.4f`. With {glue:text}`c03_test_n` test images per dataset, one
# standard error of these accuracies is about {glue:text}`c03_se:.3f` (of a difference, 1.4 times
# that), so differences of one or two points are at the edge of noise at this scale.
#
# Collapse: at the end of training NC1 is {glue:text}`c03_nc1_ours_min:.3g` to
# {glue:text}`c03_nc1_ours_max:.3g` for the fixed-ETF $d = K$ network, against
# {glue:text}`c03_nc1_base_min:.3g` to {glue:text}`c03_nc1_base_max:.3g` for the baseline and
# {glue:text}`c03_nc1_lk_min:.3g` to {glue:text}`c03_nc1_lk_max:.3g` for the learned $d = K$ network.
# Training the eight runs took {glue:text}`c03_train_minutes:.1f` wall-clock minutes on a 2-core
# CPU shared with other jobs (about 3 minutes per run when the CPU was not contended).
#
# ## Paper vs this book
#
# | | {cite:t}`zhu2021geometric` | this book, `cpu` preset | this book, `paper` preset |
# |---|---|---|---|
# | network | ResNet18 (width 64), last block outputs $K$ channels for $d = K$ | memory: the same ResNet18, width 64; training: width {glue:text}`c03_width` (stage widths 8-64), same $d = K$ construction | ResNet18 width 64 |
# | classifier | fixed simplex ETF (the authors' code has a classifier bias unless `--no-bias`) | fixed simplex ETF as a buffer, no bias; learned: `nn.Linear` with bias | same as `cpu` |
# | data | MNIST, CIFAR-10 (among others) | MNIST and FashionMNIST, 100 training and 100 test images per class | full MNIST and FashionMNIST |
# | protocol | SGD lr 0.05, momentum 0.9, wd 5e-4, batch 128, 200 epochs, lr x0.1 every 40 | same, 50 epochs, lr x0.1 every 10 | same as the paper |
# | memory | "reduces memory by over 20%" (notion and batch not stated) | measured per notion: parameters / grads / momentum {glue:text}`c03_state_saving:.1%` less (holds); whole step at batch 128: {glue:text}`c03_total_saving_a:.1%` / {glue:text}`c03_total_saving_b:.1%` less (does not hold); GPU peak: pending a GPU | same measurement; run with `--device cuda` for the GPU peak |
# | generalization | "without sacrificing" | fixed-ETF d = K vs baseline: {glue:text}`c03_worst_gap:+.4f` to {glue:text}`c03_best_gap:+.4f` final test accuracy, at small scale | pending: needs a GPU run |
#
# What deviates and why: 200 epochs of full-width ResNet18 on 60,000 images take hundreds of hours
# per run on this 2-core CPU (`bench/RESULTS.md` extrapolates 1,350 hours for 350 epochs), and the
# paper needs eight such runs. The `cpu` preset therefore trains a width-8 ResNet18 on 1,000 images
# per dataset for 50 epochs (the learning-rate schedule scaled with it), so accuracy is far from the paper's, and
# only the *comparison* between configurations carries over. The memory measurement needs no such
# scaling: it is the full-width network at the paper's batch size. We do not know which memory the
# paper measured, so we report every notion. The `paper` preset runs the published protocol:
# `papermill chapters/03_fixed_etf.ipynb out.ipynb -p PRESET paper` on a GPU.

# %% tags=["remove-cell"]
assert set(mem["variant"].str.split(",").str[0]) == {"learned", "etf"}
assert (mem[["trainable_params", *memory.BYTE_COLUMNS[:-1]]] > 0).all().all()
for (ds, v), hist in histories.items():
    assert len(hist) == exp["epochs"], (ds, v)
    assert hist[["train_error", "test_error", "train_loss"]].notna().all().all()
    assert all(math.isfinite(x) for x in hist["nc1"].dropna()) and hist["nc1"].notna().sum() >= 2
if PRESET != "smoke":
    # memory: d = K removes > 20% of the weights, gradients and momentum; saved activations fall too
    assert state_saving > 0.2 and float(at_big["trainable_params"].iloc[0]) > 0.4
    assert (at_big["saved_bytes"] > 0).all() and (at_big["total_bytes"] > 0).all()
    # ... but not 20% of a whole batch-128 step (what this chapter reports)
    assert (at_big["total_bytes"] < 0.2).all()
    # accuracy: every run fits its training set; fixed-ETF d = K loses at most 3 points of test accuracy
    assert (acc["train acc. (end)"] > 0.99).all(), acc[["dataset", "configuration", "train acc. (end)"]]
    assert ours_rows["test acc. - baseline"].min() > -0.03, ours_rows
