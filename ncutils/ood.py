"""Layer-wise features, OOD scores, detection metrics and linear probes (Harun et al. 2025).

* :class:`LayerFeatures` registers forward hooks on named modules and keeps, per forward pass, each
  module's output reduced as the authors' ``retrieve_any_layer.py`` does: a convolutional output
  ``B x C x H x W`` is average-pooled to ``2 x 2`` (to ``1 x 1`` when it is smaller, or where
  ``pool_sides`` says so: they pool their last conv layer to ``1 x 1``) and flattened, a ``B x d``
  output is kept as it is.
* :func:`layer_class_stats` streams those features into :class:`ncutils.metrics.ClassStats`, one per
  layer, without holding the N x d feature matrices; :func:`extract_layer_features` returns them.
* :func:`energy_score` is the authors' ID score ``logsumexp(logits)`` (higher = more ID);
  :func:`detection_metrics` turns ID and OOD scores into AUROC and the FPR at 95% TPR with
  `pytorch-ood`'s metric functions, in the authors' convention (ID is the positive class: the
  threshold keeps 95% of the ID samples, the FPR is the share of OOD samples above it).
* :func:`linear_probe` fits a scikit-learn logistic regression on frozen features (standardized
  first) and returns its test accuracy, its logits and its weights mapped back to the raw features.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .metrics import ClassStats

__all__ = ["pool_features", "LayerFeatures", "extract_layer_features", "layer_class_stats",
           "energy_score", "detection_metrics", "linear_probe", "DETECTION_PROBE", "adamw_probe", "pearson",
           "is_conv_layer", "layer_correlations"]


def pool_features(output: torch.Tensor, side: int | None = None) -> torch.Tensor:
    """A module output as a ``B x d`` feature matrix: 4-D outputs average-pooled to ``side x side``
    (default 2 x 2, or 1 x 1 when smaller than 2 x 2) and flattened; 2-D outputs unchanged."""
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"output must be a torch.Tensor, got {type(output).__name__}")
    if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 1):
        raise ValueError(f"side must be a positive integer or None, got {side!r}")
    if output.ndim == 4:
        if side is None:
            side = 2 if min(output.shape[-2:]) >= 2 else 1
        return F.adaptive_avg_pool2d(output, side).flatten(1)
    if output.ndim == 2:
        return output
    raise ValueError(f"output must be B x d or B x C x H x W, got shape {tuple(output.shape)}")


class LayerFeatures:
    """Context manager: forward hooks on ``modules`` (name -> module); ``features`` holds each
    module's pooled, detached output of the last forward pass.

    >>> with LayerFeatures(model.layer_modules()) as hooks:
    ...     model(x)
    ...     hooks.features["encoder"]
    """

    def __init__(self, modules: Mapping[str, nn.Module], pool_sides: Mapping[str, int] | None = None):
        if not isinstance(modules, Mapping) or not modules:
            raise ValueError("modules must be a non-empty mapping of layer name -> nn.Module")
        for name, module in modules.items():
            if not isinstance(module, nn.Module):
                raise TypeError(f"modules[{name!r}] must be an nn.Module, got {type(module).__name__}")
        self.pool_sides = dict(pool_sides or {})
        unknown = sorted(set(self.pool_sides) - set(modules))
        if unknown:
            raise ValueError(f"pool_sides names layers that modules lacks: {unknown}")
        self.modules = OrderedDict(modules)
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []

    def _hook(self, name):
        def hook(module, inputs, output):
            self.features[name] = pool_features(output, self.pool_sides.get(name)).detach()
        return hook

    def __enter__(self) -> "LayerFeatures":
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def run(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward ``x`` and return ``{name: B x d features}`` in the order of ``modules``."""
        self.features = {}
        model(x)
        missing = [n for n in self.modules if n not in self.features]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the forward pass")
        return {n: self.features[n] for n in self.modules}


def _check_xy(x, y=None):
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch tensor, got {getattr(x, 'shape', type(x))}")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (len(x),)):
        raise ValueError(f"y must be a 1-D tensor of length {len(x)}, got {getattr(y, 'shape', type(y))}")


def _batches(n: int, batch_size: int):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return range(0, n, batch_size)


@torch.no_grad()
def extract_layer_features(model: nn.Module, modules: Mapping[str, nn.Module], x: torch.Tensor,
                           batch_size: int = 512, pool_sides: Mapping[str, int] | None = None
                           ) -> dict[str, torch.Tensor]:
    """``{layer: N x d float32 CPU tensor}`` of every hooked layer over ``x`` (model in eval mode;
    ``pool_sides`` as in :class:`LayerFeatures`)."""
    _check_xy(x)
    was_training = model.training
    model.eval()
    out: dict[str, list] = {}
    device = next(model.parameters()).device
    with LayerFeatures(modules, pool_sides) as hooks:
        for s in _batches(len(x), batch_size):
            for name, f in hooks.run(model, x[s:s + batch_size].to(device)).items():
                out.setdefault(name, []).append(f.float().cpu())
    model.train(was_training)
    return {n: torch.cat(v) for n, v in out.items()}


@torch.no_grad()
def layer_class_stats(model: nn.Module, modules: Mapping[str, nn.Module], x: torch.Tensor,
                      y: torch.Tensor, num_classes: int, batch_size: int = 512,
                      pool_sides: Mapping[str, int] | None = None) -> dict[str, ClassStats]:
    """Per-layer :class:`ClassStats` (class means, within-class scatter) of the hooked features,
    streamed batch by batch in float64: only K x d and d x d tensors are kept per layer."""
    _check_xy(x, y)
    was_training = model.training
    model.eval()
    stats = {name: ClassStats(num_classes) for name in modules}
    device = next(model.parameters()).device
    with LayerFeatures(modules, pool_sides) as hooks:
        for s in _batches(len(x), batch_size):
            yb = y[s:s + batch_size]
            for name, f in hooks.run(model, x[s:s + batch_size].to(device)).items():
                stats[name].update(f, yb.to(f.device))
    model.train(was_training)
    return stats


def energy_score(logits, temperature: float = 1.0) -> np.ndarray:
    """The ID score of the energy method, ``T logsumexp(logits / T)`` (higher = more ID), as a
    float64 array; computed with `pytorch-ood`'s ``EnergyBased.score`` (which returns its negative,
    an outlier score)."""
    from pytorch_ood.detector import EnergyBased

    t = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] < 1:
        raise ValueError(f"logits must be an N x K array with N >= 1, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("logits contain NaN or infinite values")
    if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
            and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    return (-EnergyBased.score(t.double(), t=float(temperature))).numpy()


def _scores(name, s) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(s, dtype=np.float64))
    if t.ndim != 1 or len(t) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def detection_metrics(id_scores, ood_scores, tpr: float = 0.95) -> dict[str, float]:
    """AUROC and FPR at ``tpr`` TPR of separating ID from OOD by a score that is higher for ID.

    As in the authors' ``metrics.py`` (after Liu et al.'s energy paper) ID is the positive class:
    ``fpr95`` is the fraction of OOD samples scored at or above the highest threshold that keeps
    at least 95% of the ID samples. Computed with ``pytorch_ood.metrics.functional`` (which takes
    labels < 0 as the positive class).
    """
    from pytorch_ood.metrics.functional import auroc, fpr_at_tpr

    s_in, s_out = _scores("id_scores", id_scores), _scores("ood_scores", ood_scores)
    if not (isinstance(tpr, float) and 0.0 < tpr < 1.0):
        raise ValueError(f"tpr must be a float in (0, 1), got {tpr!r}")
    scores = torch.cat([s_in, s_out])
    labels = torch.cat([-torch.ones(len(s_in), dtype=torch.long), torch.zeros(len(s_out), dtype=torch.long)])
    return {"auroc": float(auroc(scores, labels)), f"fpr{round(tpr * 100)}": float(fpr_at_tpr(scores, labels, tpr))}


def linear_probe(train_features, train_labels, test_features, test_labels=None, C: float = 1.0,
                 max_iter: int = 1000, extra_features: Mapping | None = None, seed: int = 0) -> dict:
    """Fit a linear probe (scikit-learn ``StandardScaler`` + multinomial ``LogisticRegression``)
    on frozen features and evaluate it.

    Returns ``accuracy`` on the test set (NaN without ``test_labels``), ``test_logits``,
    ``logits`` of each array in ``extra_features`` (name -> N x d), ``weight`` (K x d) and ``bias``
    (K) of the same affine map on the *raw* features, and ``converged``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.exceptions import ConvergenceWarning

    xtr = np.asarray(train_features, dtype=np.float64)
    ytr = np.asarray(train_labels)
    xte = np.asarray(test_features, dtype=np.float64)
    if xtr.ndim != 2 or len(xtr) == 0:
        raise ValueError(f"train_features must be a non-empty N x d array, got shape {xtr.shape}")
    if ytr.shape != (len(xtr),) or not np.issubdtype(ytr.dtype, np.integer):
        raise ValueError(f"train_labels must be {len(xtr)} integer labels, got shape {ytr.shape}, dtype {ytr.dtype}")
    if len(np.unique(ytr)) < 2:
        raise ValueError("train_labels must contain at least 2 classes")
    if xte.ndim != 2 or xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"test_features must be N x {xtr.shape[1]} like train_features, got shape {xte.shape}")
    if not (np.isfinite(xtr).all() and np.isfinite(xte).all()):
        raise ValueError("train_features or test_features contain NaN or infinite values")
    if not (isinstance(C, (int, float)) and not isinstance(C, bool) and C > 0):
        raise ValueError(f"C must be a positive number, got {C!r}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(xtr, ytr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    scaler, lr = probe[0], probe[1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weight = lr.coef_ / scale  # logits = W (x - m) / s + b = (W / s) x + (b - (W / s) m)
    bias = lr.intercept_ - weight @ scaler.mean_
    out = {"test_logits": probe.decision_function(xte), "weight": weight, "bias": bias,
           "converged": converged, "classes": lr.classes_, "accuracy": math.nan}
    if test_labels is not None:
        yte = np.asarray(test_labels)
        if yte.shape != (len(xte),):
            raise ValueError(f"test_labels must have length {len(xte)}, got shape {yte.shape}")
        out["accuracy"] = float((lr.classes_[out["test_logits"].argmax(1)] == yte).mean())
    out["logits"] = {k: probe.decision_function(np.asarray(v, dtype=np.float64))
                     for k, v in (extra_features or {}).items()}
    return out


# The authors' detection probe (``ood_det/linear_probe_det.py``, ``ood_det_vgg_nc.sh``): nn.Linear
# initialized N(0, 0.01) with zero bias, AdamW lr 1e-3 without weight decay, cross entropy with label
# smoothing 0.1, 30 epochs of shuffled batches of 256, no feature scaling; features of the
# projector's output are L2-normalized first. Energy scores come from the last epoch's logits.
DETECTION_PROBE = dict(epochs=30, lr=1e-3, weight_decay=0.0, batch_size=256, label_smoothing=0.1)


def adamw_probe(train_features, train_labels, test_features, test_labels=None,
                extra_features: Mapping | None = None, normalize: bool = False, epochs: int = 30,
                lr: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 256,
                label_smoothing: float = 0.1, seed: int = 0) -> dict:
    """The authors' linear probe (:data:`DETECTION_PROBE`), trained with torch on frozen features
    (L2-normalized first when ``normalize``). Returns what :func:`linear_probe` returns: the last
    epoch's ``accuracy`` on the test set, ``test_logits``, ``logits`` of ``extra_features``, and
    ``weight`` / ``bias`` of the trained layer (on the features as the probe sees them)."""
    xtr = torch.as_tensor(np.asarray(train_features, dtype=np.float32))
    ytr = torch.as_tensor(np.asarray(train_labels)).long()
    xte = torch.as_tensor(np.asarray(test_features, dtype=np.float32))
    if xtr.ndim != 2 or len(xtr) == 0 or ytr.shape != (len(xtr),):
        raise ValueError(f"train_features must be a non-empty N x d array with N labels, got {tuple(xtr.shape)} "
                         f"and {tuple(ytr.shape)}")
    if xte.ndim != 2 or xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"test_features must be N x {xtr.shape[1]} like train_features, got shape {tuple(xte.shape)}")
    if not (torch.isfinite(xtr).all() and torch.isfinite(xte).all()):
        raise ValueError("train_features or test_features contain NaN or infinite values")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    prep = (lambda x: F.normalize(x, p=2, dim=-1, eps=1e-8)) if normalize else (lambda x: x)
    k = int(ytr.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(xtr.shape[1], k)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=gen)
        layer.bias.zero_()
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    xtr_p = prep(xtr)
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=gen)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            loss = F.cross_entropy(layer(xtr_p[idx]), ytr[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits = lambda x: layer(prep(torch.as_tensor(np.asarray(x, dtype=np.float32)))).double().numpy()  # noqa: E731
        out = {"test_logits": logits(xte), "weight": layer.weight.detach().double().numpy(),
               "bias": layer.bias.detach().double().numpy(), "converged": True, "classes": np.arange(k),
               "accuracy": math.nan}
        if test_labels is not None:
            yte = np.asarray(test_labels)
            if yte.shape != (len(xte),):
                raise ValueError(f"test_labels must have length {len(xte)}, got shape {yte.shape}")
            out["accuracy"] = float((out["test_logits"].argmax(1) == yte).mean())
        out["logits"] = {name: logits(v) for name, v in (extra_features or {}).items()}
    return out


def is_conv_layer(name: str) -> bool:
    """Whether a layer of :meth:`ncutils.ood_model.OODNet.layer_modules` is one of the encoder's conv
    layers (``conv1``.. and the last, ``encoder``): the layers the authors correlate over."""
    return name.startswith("conv") or name == "encoder"


def layer_correlations(layers) -> dict:
    """Over the conv layers of one network (a ``layers`` table of :func:`ncutils.ood_train.analyze`),
    the Pearson R of collapse (-log10 NC1) with detection (mean of near and far AUROC) and with
    transfer (mean of near and far probe accuracy): ``{"r_detection", "r_transfer"}``."""
    conv = layers[layers["layer"].map(is_conv_layer)]
    collapse = -np.log10(conv["nc1"].to_numpy(dtype=float))
    keep = np.isfinite(collapse)
    detection = ((conv["auroc_near"] + conv["auroc_far"]) / 2).to_numpy(dtype=float)
    transfer = ((conv["transfer_near"] + conv["transfer_far"]) / 2).to_numpy(dtype=float)
    return {"r_detection": pearson(collapse[keep], detection[keep]),
            "r_transfer": pearson(collapse[keep], transfer[keep])}


def pearson(x, y) -> float:
    """Pearson correlation of two equal-length 1-D arrays (NaN when either is constant)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2:
        raise ValueError(f"x and y must be 1-D arrays of the same length >= 2, got shapes {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("x or y contain NaN or infinite values")
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else math.nan
