"""Chapter 5's networks: imbalanced training runs, their minority-collapse measurements, the cost.

The runs use the book's training loop (:func:`ncutils.train.train`) on step-imbalanced subsets
(``counts``: K_A majority classes of n_A images, the others n_A // R), with two remedies at one large
R: oversampling the minority classes (``oversample``, the authors' ``train_models_oversampling.py``)
and the fixed simplex-ETF classifier (``classifier="etf"``). After training, :func:`train_and_measure`
reloads the final checkpoint and stores what chapter 5 needs and the loop does not record: the last
layer (table ``per_class`` and arrays ``last_layer``) and, in the run summary, the minority and
majority classifier cosines (uncentered, as the authors' ``minority_collapse.py``) and the
majority / minority test accuracies (pooled over the test images of each group).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import config as _config
from .checks import check_int, check_seeds
from .lpm import group_cosine
from .store import Run, load_or_run

__all__ = ["STEP_SECONDS_CPU", "counts_for", "network_configs", "group_metrics", "measure_model",
           "train_and_measure", "run_model", "run_networks", "remedy_seed_configs", "run_remedy_seeds",
           "cost_estimate"]

# Measured seconds of one SGD step (batch 128, 28 px, 1 thread, one process alone) on the book's
# 2-core CPU: MLP 3 x 512, VGG11 width 8, ResNet18 width 8.
STEP_SECONDS_CPU = {"mlp": 0.007, "vgg11": 0.066, "resnet18": 0.087}
_NET_KEYS = ("runs", "n_major", "ratios", "remedy_ratio", "oversample", "etf_remedy", "remedies_for",
             "remedy_seeds", "remedy_seeds_for", "seed_overrides")


def counts_for(n_major: int, ratio: int, K: int = 10, K_A: int = 5) -> list[int]:
    """Per-class image counts: ``n_major`` for classes 0..K_A-1, ``n_major // ratio`` for the rest."""
    for name, v, low in (("n_major", n_major, 1), ("ratio", ratio, 1), ("K", K, 2), ("K_A", K_A, 0)):
        check_int(v, name, low)
    if K_A > K:
        raise ValueError(f"K_A must be <= K={K}, got {K_A}")
    if n_major // ratio < 1:
        raise ValueError(f"n_major={n_major} // ratio={ratio} leaves no image for a minority class")
    return [n_major] * K_A + [n_major // ratio] * (K - K_A)


def network_configs(preset: str, seed: int = 0) -> dict:
    """``{(dataset, arch, variant): (label, run config)}`` for every network run of the preset.

    ``variant`` is ``"R<r>"`` for the sweep over R, ``"R<r>-os<f>"`` for minority oversampling by f
    and ``"R<r>-etf"`` for the fixed-ETF classifier at ``remedy_ratio``. Runs given ``steps`` get
    ``epochs = round(steps / steps per epoch)`` (at least 3) so every R trains the same number of
    SGD steps; the test set and the collapse metrics are evaluated at about 20 evenly spaced
    epochs besides the log-spaced snapshots. At a seed other than 0 the runs take the preset's
    ``seed_overrides`` (only settings that leave training unchanged: ``train_eval_every``).
    """
    from .train import run_config

    net = _config.get_preset("minority_collapse", preset)["networks"]
    base = {k: v for k, v in net.items() if k not in _NET_KEYS}
    overrides = dict(net.get("seed_overrides", {})) if seed != 0 else {}
    if set(overrides) - {"train_eval_every"}:
        raise ValueError(f"seed_overrides of minority_collapse at {preset!r} may only set train_eval_every "
                         f"(a setting that leaves training unchanged), got {sorted(overrides)}")
    K_A = net["K_A"]
    out = {}
    for dataset, arch in net["runs"]:
        n_major = net["n_major"][dataset] if isinstance(net["n_major"], dict) else net["n_major"]
        variants = [(f"R{r}", r, {}) for r in net["ratios"]]
        if tuple((dataset, arch)) in [tuple(p) for p in net["remedies_for"]]:
            r = net["remedy_ratio"]
            variants += [(f"R{r}-os{f}", r, {"oversample": [1] * K_A + [f] * (10 - K_A)})
                         for f in net["oversample"]]
            if net["etf_remedy"]:
                variants.append((f"R{r}-etf", r, {"classifier": "etf"}))
        for name, r, extra in variants:
            counts = counts_for(n_major, r, 10, K_A)
            per = dict(base["per_arch"][arch])
            steps = per.pop("steps", None)
            probe = dict(base, per_arch={arch: per})
            cfg = run_config(probe, dataset, arch, seed, counts=counts, n_per_class=None, **extra, **overrides)
            if steps is not None:
                factors = extra.get("oversample") or [1] * 10
                n_eff = sum(c * f for c, f in zip(counts, factors))
                cfg["epochs"] = max(3, round(steps / math.ceil(n_eff / cfg["batch_size"])))
                cfg["steps"] = steps
            cfg["snapshot_every"] = max(1, cfg["epochs"] // 20)
            out[(dataset, arch, name)] = (f"{dataset}-{arch}-{name}-s{seed}", cfg)
    return out


def remedy_seed_configs(preset: str) -> dict:
    """``{(dataset, arch, variant, seed): (label, run config)}``: the runs at ``remedy_ratio`` (the
    plain one and every remedy) of each ``remedy_seeds_for`` pair, once per seed of
    ``remedy_seeds``, so that the remedies can be compared paired by seed. Seed 0's runs are the
    same runs as :func:`network_configs`'s (and the other seeds' are :func:`network_configs` at
    that seed, with its ``seed_overrides``)."""
    net = _config.get_preset("minority_collapse", preset)["networks"]
    seeds, pairs = tuple(net.get("remedy_seeds", ())), [tuple(p) for p in net.get("remedy_seeds_for", ())]
    check_seeds(list(seeds))
    remedied = [tuple(p) for p in net["remedies_for"]]
    stray = [p for p in pairs if p not in remedied]
    if stray:
        raise ValueError(f"remedy_seeds_for={stray!r} of minority_collapse at {preset!r} has no remedies; "
                         f"choose from remedies_for={remedied!r}")
    prefix = f"R{net['remedy_ratio']}"
    out = {}
    for seed in seeds:
        for (dataset, arch, variant), entry in network_configs(preset, seed).items():
            if (dataset, arch) in pairs and variant.split("-")[0] == prefix:
                out[(dataset, arch, variant, seed)] = entry
    return out


def group_metrics(weight, class_means, global_mean, per_class_correct, per_class_total, K_A: int) -> dict:
    """Minority-collapse measurements of one trained network.

    ``weight`` (K x d): the classifier; ``class_means`` (K x d) and ``global_mean`` (d): training
    features, the global mean over all training samples (as the authors center them);
    ``per_class_correct`` / ``per_class_total``: test-set counts per class. Returns the mean pairwise
    cosine of the minority (rows K_A..K-1) and majority classifiers (uncentered), the same for the
    centered class means, the mean squared classifier norm (the model's E_W) and majority / minority
    test accuracy (correct over total within each group).
    """
    W = np.asarray(weight, dtype=np.float64)
    M = np.asarray(class_means, dtype=np.float64) - np.asarray(global_mean, dtype=np.float64)
    correct = np.asarray(per_class_correct, dtype=np.float64)
    total = np.asarray(per_class_total, dtype=np.float64)
    K = W.shape[0]
    if W.ndim != 2 or M.shape != W.shape or correct.shape != (K,) or total.shape != (K,):
        raise ValueError(f"weight and class_means must be K x d, per-class counts length K; got "
                         f"{W.shape}, {M.shape}, {correct.shape}, {total.shape}")
    if not (isinstance(K_A, int) and 2 <= K_A <= K - 2):
        raise ValueError(f"K_A must be an integer with 2 <= K_A <= K - 2 = {K - 2}, got {K_A!r}")
    if np.any(total <= 0) or np.any(correct < 0) or np.any(correct > total):
        raise ValueError("per_class_total must be > 0 and 0 <= per_class_correct <= per_class_total")
    maj, mino = range(K_A), range(K_A, K)
    return {"minority_cosine": group_cosine(W, mino), "majority_cosine": group_cosine(W, maj),
            "minority_mean_cosine": group_cosine(M, mino), "majority_mean_cosine": group_cosine(M, maj),
            "E_W": float(np.square(W).sum(1).mean()),
            "test_acc_majority": float(correct[:K_A].sum() / total[:K_A].sum()),
            "test_acc_minority": float(correct[K_A:].sum() / total[K_A:].sum()),
            "test_acc": float(correct.sum() / total.sum())}


@torch.no_grad()
def measure_model(model, x, y, xt, yt, K_A: int, batch_size: int = 1024) -> tuple[dict, list, dict]:
    """Evaluate a trained :class:`ncutils.models.NCModel`: (summary, per-class rows, arrays).

    The training features give the class means, the global mean and the mean squared centered
    feature norm (the model's E_H, averaged per class as in the constraint); the test set gives the
    per-class accuracy.
    """
    model.eval()
    K = model.num_classes
    d = model.feature_dim
    sums = torch.zeros(K, d, dtype=torch.float64)
    sq = torch.zeros(K, dtype=torch.float64)
    feats = []
    for start in range(0, len(y), batch_size):
        _, h = model.logits_and_features(x[start:start + batch_size])
        feats.append(h.double().cpu())
    H = torch.cat(feats)
    yc = y.cpu()
    n = torch.bincount(yc, minlength=K).double()
    sums.index_add_(0, yc, H)
    means = sums / n[:, None]
    mu_g = H.mean(0)
    sq.index_add_(0, yc, (H - mu_g).square().sum(1))
    correct = torch.zeros(K, dtype=torch.float64)
    for start in range(0, len(yt), batch_size):
        pred = model(xt[start:start + batch_size]).argmax(1).cpu()
        yb = yt[start:start + batch_size].cpu()
        correct.index_add_(0, yb, (pred == yb).double())
    total = torch.bincount(yt.cpu(), minlength=K).double()
    W = model.classifier.weight.detach().double().cpu()
    summary = group_metrics(W.numpy(), means.numpy(), mu_g.numpy(), correct.numpy(), total.numpy(), K_A)
    summary["E_H"] = float((sq / n).mean())
    rows = [{"class": k, "group": "majority" if k < K_A else "minority", "n_train": int(n[k]),
             "n_test": int(total[k]), "test_acc": float(correct[k] / total[k]),
             "w_sq": float(W[k].square().sum()), "h_sq": float(sq[k] / n[k])} for k in range(K)]
    bias = getattr(model.classifier, "bias", None)
    arrays = {"weight": W.numpy(), "class_means": means.numpy(), "global_mean": mu_g.numpy(),
              "bias": (bias.detach().double().cpu().numpy() if bias is not None else np.zeros(K))}
    return summary, rows, arrays


def train_and_measure(run: Run, cfg: dict, device=None, progress: bool | None = None) -> dict:
    """Train ``cfg`` into ``run`` with :func:`ncutils.train.train`, then measure the final model
    (:func:`measure_model`) into table ``per_class``, arrays ``last_layer`` and the summary."""
    from . import train as _train

    summary = _train.train(run, cfg, device=device, progress=progress)
    if not summary.get("complete"):
        return summary
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, x, y, xt, yt, _ = _train._prepare(cfg, device)
    _train.resume_checkpoint(run, device, model)
    measured, rows, arrays = measure_model(model, x, y, xt, yt, cfg["K_A"])
    run.save_table("per_class", rows)
    run.save_arrays("last_layer", **arrays)
    return {**summary, **measured}


def run_model(preset: str, force: bool = False) -> Run:
    """Load or compute chapter 5's Layer-Peeled Model sweep (:func:`ncutils.lpm.model_experiment`)."""
    from . import lpm

    cfg = _config.get_preset("minority_collapse", preset)["model"]
    return load_or_run("minority_collapse", preset, cfg, lambda r: lpm.model_experiment(r, cfg),
                       label="model", force=force)


def _only_keys(preset: str, only) -> set | None:
    """``only``'s ``(dataset, arch, variant)`` keys (tuples or ``"dataset:arch:variant"`` strings),
    checked against chapter 5's network runs at ``preset``; ``None`` keeps every run."""
    if only is None:
        return None
    if isinstance(only, (str, bytes)):
        raise TypeError(f"only must be a sequence of run keys, not the single string {only!r}")
    keys = {tuple(k.split(":")) if isinstance(k, str) else tuple(k) for k in only}
    known = network_configs(preset)
    unknown = sorted(":".join(map(str, k)) for k in keys if k not in known)
    if unknown:
        raise ValueError(f"only={unknown!r} names no run of minority_collapse at {preset!r}; choose "
                         f"from {[':'.join(k) for k in known]}")
    return keys


def _load_or_train(preset: str, configs: dict, force: bool, device, progress) -> dict:
    """``{key: Run}`` for ``configs`` (``{key: (label, cfg)}``): committed runs are loaded, the others
    trained and measured (:func:`train_and_measure`) through :func:`ncutils.store.load_or_run`."""
    return {key: load_or_run("minority_collapse", preset, cfg,
                             lambda r, c=cfg: train_and_measure(r, c, device=device, progress=progress),
                             label=label, force=force, device=device)
            for key, (label, cfg) in configs.items()}


def run_networks(preset: str, seed: int = 0, force: bool = False, device=None, progress: bool | None = None,
                 only: tuple | None = None) -> dict:
    """Load or train every network run of chapter 5 at ``preset``: ``{(dataset, arch, variant): Run}``.

    ``only``: labels' ``(dataset, arch, variant)`` keys (or ``"dataset:arch:variant"`` strings) to
    run; others are skipped. Committed runs are loaded, never retrained (unless ``force``).
    """
    keys = _only_keys(preset, only)
    configs = {k: v for k, v in network_configs(preset, seed).items() if keys is None or k in keys}
    return _load_or_train(preset, configs, force, device, progress)


def run_remedy_seeds(preset: str, force: bool = False, device=None, progress: bool | None = None,
                     only: tuple | None = None) -> dict:
    """Load or train the runs of :func:`remedy_seed_configs`: ``{(dataset, arch, variant, seed): Run}``.
    ``only``: ``(dataset, arch, variant)`` keys (or ``"dataset:arch:variant"`` strings) to keep; a key
    of a network run without remedy seeds keeps nothing, one of no run at all is refused."""
    keys = _only_keys(preset, only)
    configs = {k: v for k, v in remedy_seed_configs(preset).items() if keys is None or k[:3] in keys}
    return _load_or_train(preset, configs, force, device, progress)


def cost_estimate(preset: str, step_seconds: dict | None = None, test_images: int = 10_000) -> list[dict]:
    """Estimated single-thread CPU seconds of every network run of ``preset`` (seed 0's, then the
    other seeds of :func:`remedy_seed_configs`).

    SGD steps x the measured step cost (``STEP_SECONDS_CPU``), plus evaluation: every
    ``train_eval_every``-th epoch (default each) one forward pass over the training set (counted as a third of a step per 128 images), each snapshot
    one more over the training and the test set.
    """
    from .train import snapshot_set

    step_seconds = step_seconds or STEP_SECONDS_CPU
    rows = []
    runs = [(*k, 0, entry) for k, entry in network_configs(preset).items()]
    runs += [(*k, entry) for k, entry in remedy_seed_configs(preset).items() if k[3] != 0]
    for dataset, arch, variant, seed, (label, cfg) in runs:
        factors = cfg.get("oversample") or [1] * 10
        n = sum(cfg["counts"])
        n_eff = sum(c * f for c, f in zip(cfg["counts"], factors))
        spe = math.ceil(n_eff / cfg["batch_size"])
        steps = spe * cfg["epochs"]
        eval_steps = math.ceil(cfg["epochs"] / (cfg.get("train_eval_every") or 1)) * n / cfg["batch_size"] / 3 + \
            len(snapshot_set(cfg)) * (n + test_images) / cfg["batch_size"] / 3
        rows.append({"dataset": dataset, "arch": arch, "variant": variant, "seed": seed, "train_images": n,
                     "epochs": cfg["epochs"], "steps": steps,
                     "seconds": (steps + eval_steps) * step_seconds[arch]})
    return rows
