r"""Semantic segmentation pieces: class centers, the center-collapse (CR) loss, IoU, a small U-Net.

Zhong et al. (2023) read neural collapse at the level of *class centers* of pixel features: the
center of class k in a batch is z_k = mean of the features of the pixels labelled k. Their
center-collapse regularizer classifies the centers of the classes present in a batch with a fixed
simplex-ETF classifier W* (K x C, rows w*_k):

    L_CR = -(1/P) sum_{k present} log softmax_k(scale * W* z_k),

P the number of classes present. Each class counts once, however many pixels it has, so the
loss pulls minority-class centers toward their ETF vertex as hard as majority ones.

Conventions: features are B x C x h x w, labels B x H x W integer class ids with ``ignore_index``
(255; CamVid's void) for pixels that carry no label. Features smaller than the labels are resized
to the label size (bilinear, ``align_corners=False``) before pixels are pooled. Pixels labelled
``ignore_index`` never contribute (at h x w = H x W their features are not even read; after
resizing, a low-resolution feature can of course reach labelled pixels through the interpolation).
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int
from .etf import ETFClassifier
from .metrics import ClassStats, collapse_metrics, metrics_from_stats, ncc_mismatch_count
from .models import _conv_bn_relu, _init_convs

__all__ = [
    "IGNORE_INDEX", "check_seg_labels", "pixel_features", "class_centers", "centers_cross_entropy",
    "center_collapse_loss",
    "ConfusionMatrix", "iou_per_class", "SegUNet", "subsample_pixels", "seg_collapse_metrics",
    "class_geometry", "evaluate_segmentation", "SEG_HISTORY_COLUMNS", "build_seg_model", "augment_batch",
    "train_segmentation", "run_segmentation", "seg_variant_label", "planned_runs",
]

IGNORE_INDEX = 255


# ----------------------------------------------------------------------------- input checks

def _check_seg_features(features, name: str = "features") -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim != 4:
        raise ValueError(f"{name} must have shape B x C x h x w, got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {features.dtype}")
    return features


def check_seg_labels(labels, num_classes: int, ignore_index: int = IGNORE_INDEX,
                     shape: Optional[Sequence[int]] = None, name: str = "labels") -> torch.Tensor:
    """Check integer labels B x H x W (or ``shape``): every value in 0..K-1 or ``ignore_index``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    if labels.ndim != 3 or (shape is not None and tuple(labels.shape) != tuple(shape)):
        want = "B x H x W" if shape is None else f"{tuple(shape)}"
        raise ValueError(f"{name} must have shape {want}, got {tuple(labels.shape)}")
    valid = labels != ignore_index
    if valid.any():
        vals = labels[valid]
        lo, hi = int(vals.min()), int(vals.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in 0..{num_classes - 1} (K = {num_classes}) or equal "
                             f"ignore_index={ignore_index}, found values in [{lo}, {hi}]")
    return labels


def _check_etf(etf, num_channels: int, name: str = "etf") -> torch.Tensor:
    w = getattr(etf, "weight", etf) if isinstance(etf, nn.Module) else etf
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a K x C tensor or a module with such a .weight, got {type(etf).__name__}")
    if w.ndim != 2 or w.shape[0] < 2 or w.shape[1] != num_channels:
        raise ValueError(f"{name} must have shape K x C = (K >= 2, {num_channels}) with C the feature "
                         f"channels, got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return w


def _resize_to(features: torch.Tensor, size) -> torch.Tensor:
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    return F.interpolate(features, size=tuple(size), mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- centers and the CR loss

def pixel_features(features, labels, num_classes: int, ignore_index: int = IGNORE_INDEX):
    """``(h N x C, y N)``: the features (resized to the label size) and labels of the N labelled
    pixels, in B, H, W order. Differentiable w.r.t. ``features``."""
    features = _check_seg_features(features)
    num_classes = check_int(num_classes, "num_classes", 1)
    b, c = features.shape[:2]
    if not isinstance(labels, torch.Tensor) or labels.ndim != 3 or labels.shape[0] != b:
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must have shape B x H x W with B = {b} (the batch of features), got {got}")
    labels = check_seg_labels(labels, num_classes, ignore_index)
    feats = _resize_to(features, labels.shape[-2:])
    valid = (labels != ignore_index).flatten()
    h = feats.permute(0, 2, 3, 1).reshape(-1, c)[valid.to(feats.device)]
    return h, labels.flatten()[valid].long().to(feats.device)


def class_centers(features, labels, num_classes: int, ignore_index: int = IGNORE_INDEX):
    """Centers of the classes present: ``(centers P x C, class ids P)``, ids increasing.

    ``features`` B x C x h x w are resized to the labels' H x W (bilinear, align_corners=False);
    the center of class k is the plain mean of the features of the pixels labelled k. Pixels
    labelled ``ignore_index`` never contribute. Differentiable w.r.t. ``features``.
    """
    h, y = pixel_features(features, labels, num_classes, ignore_index)
    sums = torch.zeros(num_classes, h.shape[1], dtype=h.dtype, device=h.device).index_add(0, y, h)
    counts = torch.bincount(y, minlength=num_classes)
    ids = torch.nonzero(counts, as_tuple=True)[0]
    return sums[ids] / counts[ids].to(h.dtype)[:, None], ids


def centers_cross_entropy(centers, ids, weight, bias=None, scale: float = 1.0, normalize: bool = False,
                          log_prior=None, smooth: float = 1.0) -> torch.Tensor:
    """The cross entropy of class centers against a fixed classifier, averaged over the centers:
    ``-(1/P) sum_k sum_j t_kj log softmax(scale * (W z_k + b) + p)_j`` with z_k L2-normalized
    first when ``normalize``, ``p`` the ``log_prior`` (None: 0) and t the one-hot targets ``ids``
    smoothed by ``smooth`` (1: none; t = smooth on the class, (1 - smooth)/(K - 1) elsewhere, as
    in the authors' code). W (K x C) and b get no gradient."""
    w = weight.detach().to(centers)
    if normalize:
        centers = F.normalize(centers, dim=1)
    logits = scale * centers @ w.T  # (the expression of the first CR runs, bitwise)
    if bias is not None:
        logits = logits + scale * bias.detach().to(centers)
    if log_prior is not None:
        logits = logits + log_prior.to(logits)
    if smooth == 1.0:
        return F.cross_entropy(logits, ids)
    k = w.shape[0]
    target = F.one_hot(ids, k).to(logits)
    target = smooth * target + (1.0 - smooth) / (k - 1) * (1.0 - target)
    return -(target * F.log_softmax(logits, dim=1)).sum() / target.sum()


def center_collapse_loss(features, labels, etf, ignore_index: int = IGNORE_INDEX,
                         scale: float = 1.0, normalize: bool = False, log_prior=None) -> torch.Tensor:
    """The center-collapse loss of Zhong et al. (2023).

    ``etf``: the fixed K x C classifier W* (a tensor, or a module such as
    :class:`ncutils.etf.ETFClassifier` whose ``.weight`` is K x C). With z_k the centers of the P
    classes present (:func:`class_centers`), returns

        -(1/P) sum_k log softmax(scale * W* z_k + p)_k,

    with ``normalize=True`` the centers are L2-normalized first (as in the authors' code; W* is used
    as given, its rows are unit vectors for an ETF), and ``p = log_prior`` a length-K tensor added to
    the logits (the authors' logit adjustment, the log of a class prior; None: no term). A batch
    without labelled pixels gives 0 (still attached to the graph). Differentiable w.r.t.
    ``features``; W* gets no gradient.
    """
    features = _check_seg_features(features)
    w = _check_etf(etf, features.shape[1])
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if log_prior is not None:
        if not isinstance(log_prior, torch.Tensor) or log_prior.shape != (w.shape[0],) \
                or not log_prior.is_floating_point() or not torch.isfinite(log_prior).all():
            got = tuple(log_prior.shape) if isinstance(log_prior, torch.Tensor) else type(log_prior).__name__
            raise ValueError(f"log_prior must be None or a finite float tensor of length K = {w.shape[0]}, got {got}")
    centers, ids = class_centers(features, labels, w.shape[0], ignore_index)
    if len(ids) == 0:
        return features.sum() * 0.0
    return centers_cross_entropy(centers, ids, w, scale=scale, normalize=normalize, log_prior=log_prior)


# ----------------------------------------------------------------------------- IoU

class ConfusionMatrix:
    """Streaming K x K pixel confusion matrix (rows: target class, columns: predicted class).

    ``update(pred, target)`` with integer tensors of the same shape; pixels whose target is
    ``ignore_index`` are skipped. ``iou()`` is TP / (TP + FP + FN) per class, NaN for a class absent
    from both the predictions and the targets seen; ``miou()`` averages the non-NaN entries.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> "ConfusionMatrix":
        self.matrix.zero_()
        return self

    @torch.no_grad()
    def update(self, pred, target) -> "ConfusionMatrix":
        k = self.num_classes
        for name, t in (("pred", pred), ("target", target)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise TypeError(f"{name} must hold integer class ids, got dtype {t.dtype}"
                                + (" (for logits pass logits.argmax(1))" if name == "pred" else ""))
        if pred.shape != target.shape:
            raise ValueError(f"pred must have the shape of target {tuple(target.shape)}, got {tuple(pred.shape)}")
        valid = target != self.ignore_index
        t, p = target[valid].long().cpu(), pred.to(target.device)[valid].long().cpu()
        if len(t):
            if int(t.min()) < 0 or int(t.max()) >= k:
                raise ValueError(f"target must lie in 0..{k - 1} or equal ignore_index={self.ignore_index}, "
                                 f"found values in [{int(t.min())}, {int(t.max())}]")
            if int(p.min()) < 0 or int(p.max()) >= k:
                raise ValueError(f"pred must lie in 0..{k - 1} at labelled pixels, "
                                 f"found values in [{int(p.min())}, {int(p.max())}]")
        self.matrix += torch.bincount(t * k + p, minlength=k * k).view(k, k)
        return self

    def iou(self) -> torch.Tensor:
        m = self.matrix.to(torch.float64)
        tp = torch.diagonal(m)
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def miou(self) -> float:
        iou = self.iou()
        return float(iou.nanmean()) if not torch.isnan(iou).all() else math.nan

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(torch.diagonal(self.matrix).sum()) / total if total else math.nan

    def class_accuracy(self) -> torch.Tensor:
        """Per-class recall TP / (TP + FN); NaN for classes absent from the targets."""
        m = self.matrix.to(torch.float64)
        n = m.sum(1)
        return torch.where(n > 0, torch.diagonal(m) / n.clamp(min=1), torch.full_like(n, math.nan))


def iou_per_class(pred, target, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-class IoU (float64, length K) of one set of predictions; NaN for absent classes."""
    return ConfusionMatrix(num_classes, ignore_index).update(pred, target).iou()


# ----------------------------------------------------------------------------- model

class SegUNet(nn.Module):
    """A small U-Net: encoder levels of ``widths`` channels (two conv3x3-BN-ReLU each, 2x2 max-pool
    between levels), a decoder that upsamples bilinearly to the skip's size (any input size works),
    concatenates the skip and applies one conv3x3-BN-ReLU. The last decoder level outputs the pixel
    features (``feature_dim`` channels, post-ReLU, full input resolution); ``classifier`` is a learned
    1x1 conv (K x C weight plus bias).

    CR branch (``cr_dim``): a learned 1x1 conv ``cr_head`` projects the features to ``cr_dim``
    channels, whose class centers are classified by a fixed simplex ETF ``cr_etf``
    (:class:`ncutils.etf.ETFClassifier`, a buffer, never trained); see :meth:`cr_loss`. It is used
    only for the training loss; :meth:`forward` does not touch it. ``cr_frozen=True`` freezes the
    projection at its random initialisation (``requires_grad=False``), as in the authors' code.

    Default widths (16, 32, 64, 128) and feature_dim 32: 446,683 parameters (447,211 with cr_dim=16).
    """

    def __init__(self, num_classes: int = 11, in_channels: int = 3,
                 widths: Sequence[int] = (16, 32, 64, 128), feature_dim: int = 32,
                 cr_dim: Optional[int] = None, cr_seed: Optional[int] = None, cr_frozen: bool = False):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", 2)
        in_channels = check_int(in_channels, "in_channels", 1)
        feature_dim = check_int(feature_dim, "feature_dim", 1)
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or len(widths) < 1:
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        widths = tuple(check_int(w, f"widths[{i}]", 1) for i, w in enumerate(widths))
        self.widths, self.in_channels = widths, in_channels
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoder.append(nn.Sequential(_conv_bn_relu(cin, w), _conv_bn_relu(w, w)))
            cin = w
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(widths) - 1)):
            cout = feature_dim if i == 0 else widths[i]
            self.decoder.append(_conv_bn_relu(cin + widths[i], cout))
            cin = cout
        if len(widths) == 1:  # no decoder: a 1x1 conv-BN-ReLU sets the feature width
            self.decoder.append(nn.Sequential(nn.Conv2d(cin, feature_dim, 1, bias=False),
                                              nn.BatchNorm2d(feature_dim), nn.ReLU(inplace=True)))
        _init_convs(self)
        self.classifier = nn.Conv2d(feature_dim, num_classes, 1)
        self.cr_head = self.cr_etf = None
        if cr_dim is not None:
            cr_dim = check_int(cr_dim, "cr_dim", num_classes - 1)
            self.cr_head = nn.Conv2d(feature_dim, cr_dim, 1)
            self.cr_etf = ETFClassifier(cr_dim, num_classes, seed=cr_seed)
            if not isinstance(cr_frozen, bool):
                raise ValueError(f"cr_frozen must be True or False, got {cr_frozen!r}")
            self.cr_head.requires_grad_(not cr_frozen)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_channels

    @property
    def feature_dim(self) -> int:
        return self.classifier.in_channels

    @property
    def classifier_weight(self) -> torch.Tensor:
        """The 1x1 classifier's weight as a K x C matrix (a view)."""
        return self.classifier.weight.flatten(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape B x {self.in_channels} x H x W, got {got}")
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        if len(self.widths) == 1:
            return self.decoder[0](x)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return x

    def logits_and_features(self, x: torch.Tensor):
        """``(logits B x K x H x W, features B x C x H x W)``, features before the 1x1 classifier."""
        h = self.forward_features(x)
        return self.classifier(h), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

    def cr_features(self, features: torch.Tensor) -> torch.Tensor:
        """The CR branch's projection of pixel features (B x cr_dim x H x W)."""
        if self.cr_head is None:
            raise ValueError("this model has no CR branch; build it with cr_dim=<int>")
        return self.cr_head(features)

    def cr_loss(self, features, labels, ignore_index: int = IGNORE_INDEX, scale: float = 1.0,
                normalize: bool = False) -> torch.Tensor:
        """:func:`center_collapse_loss` of the CR-projected features against the fixed ETF."""
        return center_collapse_loss(self.cr_features(features), labels, self.cr_etf.weight,
                                    ignore_index, scale, normalize)


# ----------------------------------------------------------------------------- collapse of pixel features

def subsample_pixels(labels, max_per_class: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices into a 1-D ``labels`` keeping at most ``max_per_class`` random entries of each
    class (seeded), all of a class with fewer."""
    max_per_class = check_int(max_per_class, "max_per_class", 1)
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
        raise TypeError("labels must be a 1-D integer tensor")
    g = torch.Generator().manual_seed(int(seed))
    labels = labels.cpu()
    order = torch.randperm(len(labels), generator=g)
    shuffled = labels[order]
    # rank of each shuffled entry within its class: keep the first max_per_class of each class
    sort_idx = torch.argsort(shuffled, stable=True)
    sorted_labels = shuffled[sort_idx]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.empty_like(sort_idx)
    rank[sort_idx] = torch.arange(len(labels)) - starts
    return torch.sort(order[rank < max_per_class]).values


def seg_collapse_metrics(features, labels, weight, bias=None, ignore_index: int = IGNORE_INDEX,
                         max_per_class: Optional[int] = None, seed: int = 0, extras: bool = False) -> dict:
    """:func:`ncutils.metrics.collapse_metrics` of pixel features (B x C x h x w, resized to the
    labels) against a K x C classifier, over labelled pixels, optionally at most ``max_per_class``
    random pixels per class. Every class 0..K-1 must be present."""
    features = _check_seg_features(features)
    w = getattr(weight, "weight", weight) if isinstance(weight, nn.Module) else weight
    if isinstance(w, torch.Tensor) and w.ndim == 4 and w.shape[2:] == (1, 1):
        w = w.flatten(1)  # a 1x1 conv classifier's K x C x 1 x 1 weight
    w = _check_etf(w, features.shape[1], "weight")
    with torch.no_grad():
        h, y = pixel_features(features.detach(), labels, w.shape[0], ignore_index)
    if max_per_class is not None:
        keep = subsample_pixels(y, max_per_class, seed).to(y.device)
        h, y = h[keep], y[keep]
    return collapse_metrics(h, y, w.detach(), None if bias is None else bias.detach(), extras=extras)


def class_geometry(means: torch.Tensor, weight: torch.Tensor) -> dict:
    """Per-class geometry of class means (K x C) and classifier rows (K x C), in float64:
    ``mean_norms`` ||mu_k - mu_G||, ``classifier_norms`` ||w_k||, ``mean_cosines`` / ``classifier_cosines``
    (K x K), and ``self_duality_cosines`` cos(mu_k - mu_G, w_k) (K)."""
    if not isinstance(means, torch.Tensor) or not isinstance(weight, torch.Tensor) or means.ndim != 2 \
            or weight.shape != means.shape:
        raise ValueError("means and weight must be K x C tensors of the same shape, got "
                         f"{getattr(means, 'shape', means)} and {getattr(weight, 'shape', weight)}")
    m = means.detach().to(torch.float64)
    m = m - m.mean(0)
    w = weight.detach().to(device=m.device, dtype=torch.float64)
    mu, wu = F.normalize(m, dim=1), F.normalize(w, dim=1)
    return {"mean_norms": m.norm(dim=1), "classifier_norms": w.norm(dim=1),
            "mean_cosines": mu @ mu.T, "classifier_cosines": wu @ wu.T,
            "self_duality_cosines": (mu * wu).sum(1)}


@torch.no_grad()
def evaluate_segmentation(model: SegUNet, images, labels, batch_size: int = 8,
                          transform: Optional[Callable] = None, ignore_index: int = IGNORE_INDEX,
                          branch: str = "features", device=None, ncc: bool = False) -> dict:
    """One pass over ``images`` (uint8 N x 3 x H x W, or float) and ``labels`` (N x H x W), model in
    eval mode: ``confusion`` (:class:`ConfusionMatrix`), ``miou``, ``iou`` (K), ``pixel_accuracy``,
    ``stats`` (:class:`ncutils.metrics.ClassStats` over every labelled pixel's features, float64,
    on ``device``) and, when every class is present, ``collapse`` (:func:`metrics_from_stats`
    against the classifier; ``ncc_mismatch`` is NaN, it needs a second pass) and ``geometry``
    (:func:`class_geometry`).

    ``transform`` maps a uint8 batch to the model input (default :func:`ncutils.data.camvid_to_float`
    for uint8 images). ``branch``: "features" (pixel features vs the learned 1x1 classifier) or "cr"
    (CR-projected features vs the fixed ETF). ``ncc=True`` makes a second pass for
    ``ncc_mismatch``: the fraction of labelled pixels whose classifier decision (argmax of W h + b)
    differs from the nearest class center's.
    """
    from .data import camvid_to_float

    if branch not in ("features", "cr"):
        raise ValueError(f"branch must be 'features' or 'cr', got {branch!r}")
    if branch == "cr" and model.cr_head is None:
        raise ValueError("branch='cr' needs a model built with cr_dim=<int>")
    batch_size = check_int(batch_size, "batch_size", 1)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a N x 3 x H x W tensor, got {getattr(images, 'shape', images)}")
    k = model.num_classes
    labels = check_seg_labels(labels, k, ignore_index, shape=(images.shape[0], *images.shape[-2:]))
    if transform is None:
        transform = camvid_to_float if images.dtype == torch.uint8 else (lambda t: t)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    cm, stats = ConfusionMatrix(k, ignore_index), ClassStats(k)
    try:
        for start in range(0, len(images), batch_size):
            x = transform(images[start:start + batch_size]).to(device)
            y = labels[start:start + batch_size].to(device)
            logits, h = model.logits_and_features(x)
            cm.update(logits.argmax(1), y)
            if branch == "cr":
                h = model.cr_features(h)
            hp, yp = pixel_features(h, y, k, ignore_index)
            if len(yp):
                stats.update(hp, yp)
    finally:
        model.train(was_training)
    out = {"confusion": cm, "iou": cm.iou(), "miou": cm.miou(), "pixel_accuracy": cm.pixel_accuracy(),
           "stats": stats}
    if stats.counts is not None and bool((stats.counts > 0).all()):
        w = model.cr_etf.weight if branch == "cr" else model.classifier_weight
        b = None if branch == "cr" else model.classifier.bias
        w, b = w.detach(), (None if b is None else b.detach())
        mismatch = math.nan
        if ncc:
            wrong, total = 0, 0
            model.eval()
            try:
                for start in range(0, len(images), batch_size):
                    x = transform(images[start:start + batch_size]).to(device)
                    h = model.forward_features(x)
                    if branch == "cr":
                        h = model.cr_features(h)
                    hp, _ = pixel_features(h, labels[start:start + batch_size].to(device), k, ignore_index)
                    wrong += ncc_mismatch_count(hp, stats.means.to(hp.device), w.to(hp.device),
                                                None if b is None else b.to(hp.device))
                    total += len(hp)
            finally:
                model.train(was_training)
            mismatch = wrong / total
        out["collapse"] = metrics_from_stats(stats, w, b, ncc_mismatch=mismatch, extras=True)
        out["geometry"] = class_geometry(stats.means, w)
    return out


# ----------------------------------------------------------------------------- training

SEG_HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "cr_loss", "val_miou", "val_pixel_accuracy",
                       "epoch_seconds")
_SEG_REQUIRED = ("seed", "epochs", "batch_size", "lr", "lr_power", "momentum", "weight_decay",
                 "widths", "feature_dim", "crop", "flip", "cr_weight", "cr_dim", "cr_scale",
                 "cr_normalize", "cr_frozen", "eval_every", "n_train", "n_eval")
_SEG_OPTIONAL = ("cr_head", "class_weighting", "ceco_dim", "ceco_gain_dim", "ceco_prior", "ceco_smooth",
                 "ceco_dropout")  # chapter 4's later arms (ncutils.ceco checks their values)


def _check_seg_config(cfg: dict) -> None:
    from . import checks

    if not isinstance(cfg, dict):
        raise TypeError(f"config must be a dict, got {type(cfg).__name__}")
    missing = [k for k in _SEG_REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"segmentation config is missing {missing}")
    unknown = sorted(set(cfg) - set(_SEG_REQUIRED) - set(_SEG_OPTIONAL))
    if unknown:
        raise ValueError(f"segmentation config has unknown keys {unknown} "
                         f"(known: {sorted(_SEG_REQUIRED + _SEG_OPTIONAL)})")
    for key in ("epochs", "batch_size", "feature_dim", "eval_every"):
        check_int(cfg[key], f"config[{key!r}]", 1)
    checks.check_seed(cfg["seed"], "config['seed']")
    for key in ("lr", "lr_power", "cr_scale"):
        checks.check_real(cfg[key], f"config[{key!r}]", 0.0, low_open=True)
    checks.check_real(cfg["momentum"], "config['momentum']", 0.0, 1.0, high_open=True)
    for key in ("weight_decay", "cr_weight"):
        checks.check_real(cfg[key], f"config[{key!r}]", 0.0)
    for key in ("flip", "cr_normalize", "cr_frozen"):
        checks.check_bool(cfg[key], f"config[{key!r}]")
    widths = cfg["widths"]
    if isinstance(widths, (str, bytes)) or not isinstance(widths, (list, tuple)) or not widths:
        raise ValueError(f"config['widths'] must be a non-empty list of channel counts, got {widths!r}")
    for i, w in enumerate(widths):
        check_int(w, f"config['widths'][{i}]", 1)
    crop = cfg["crop"]
    if crop is not None and (not isinstance(crop, (list, tuple)) or len(crop) != 2
                             or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in crop)):
        raise ValueError(f"config['crop'] must be None or (height, width) in pixels, got {crop!r}")
    if cfg["cr_weight"] > 0 and cfg["cr_dim"] is None:
        raise ValueError("config['cr_weight'] > 0 needs config['cr_dim'] (the CR projection's width)")
    # Optional keys (absent in the first chapter-4 runs, whose configs must keep their hashes):
    # cr_head "simple" (the 1x1 projection + ETF of SegUNet) or the authors' "ceco" / "cecol" head
    # (ncutils.ceco), and class_weighting of the pixel cross entropy (None or "median_frequency").
    if cfg.get("cr_head", "simple") not in ("simple", "ceco", "cecol"):
        raise ValueError(f"config['cr_head'] must be 'simple', 'ceco' or 'cecol', got {cfg['cr_head']!r}")
    if cfg.get("class_weighting") not in (None, "median_frequency"):
        raise ValueError(f"config['class_weighting'] must be None or 'median_frequency', "
                         f"got {cfg['class_weighting']!r}")
    for key in ("n_train", "n_eval", "cr_dim"):
        if cfg[key] is not None:
            check_int(cfg[key], f"config[{key!r}]", 1)


def build_seg_model(cfg: dict, num_classes: int = 11) -> SegUNet:
    """The :class:`SegUNet` of a segmentation config (seeded by ``cfg['seed']``); the CR branch
    exists only when ``cfg['cr_weight'] > 0``: SegUNet's own (``cr_head`` "simple", the default) or
    the authors' head (``cr_head`` "ceco" / "cecol": :class:`ncutils.ceco.CecoHead` as the
    submodule ``model.ceco``). Either branch is created after the rest, so runs with and without it
    start from the same network weights."""
    torch.manual_seed(cfg["seed"])
    use_cr = cfg["cr_weight"] > 0
    head = cfg.get("cr_head", "simple")
    model = SegUNet(num_classes, widths=tuple(cfg["widths"]), feature_dim=cfg["feature_dim"],
                    cr_dim=cfg["cr_dim"] if use_cr and head == "simple" else None, cr_seed=cfg["seed"],
                    cr_frozen=bool(cfg["cr_frozen"]))
    if use_cr and head != "simple":
        from .ceco import build_ceco_head

        model.ceco = build_ceco_head(cfg, cfg["feature_dim"], num_classes)
    return model


def augment_batch(images: torch.Tensor, labels: torch.Tensor, crop, flip: bool,
                  generator: torch.Generator):
    """A random ``crop`` (height, width; None keeps the frame) and, with ``flip``, a random
    horizontal flip per image, drawn from ``generator``; the same window and flip for each label map."""
    n, _, height, width = images.shape
    ch, cw = (height, width) if crop is None else crop
    if ch > height or cw > width:
        raise ValueError(f"crop must fit in the {height} x {width} frames, got {tuple(crop)}")
    tops = torch.randint(0, height - ch + 1, (n,), generator=generator)
    lefts = torch.randint(0, width - cw + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    xs, ys = [], []
    for i in range(n):
        t, l = int(tops[i]), int(lefts[i])
        x, y = images[i, :, t:t + ch, l:l + cw], labels[i, t:t + ch, l:l + cw]
        if flip and bool(flips[i]):
            x, y = x.flip(-1), y.flip(-1)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def _spread(n: int, keep: Optional[int]) -> torch.Tensor:
    """``keep`` evenly spaced indices of 0..n-1 (all when None): frames from every sequence."""
    if keep is None or keep >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, keep).round().long()


def _poly_lr(cfg: dict, step: int, total: int) -> float:
    return cfg["lr"] * (1.0 - step / total) ** cfg["lr_power"]


def _geometry_arrays(prefix: str, result: dict) -> dict:
    g = result.get("geometry")
    if g is None:
        return {}
    return {f"{prefix}_{k}": v.cpu().numpy() for k, v in g.items()} | \
        {f"{prefix}_class_means": result["stats"].means.cpu().numpy(),
         f"{prefix}_class_counts": result["stats"].counts.cpu().numpy()}


def train_segmentation(run, cfg: dict, device=None, progress: Optional[bool] = None,
                       stop_after: Optional[int] = None) -> dict:
    """Train a :class:`SegUNet` on CamVid into ``run`` and measure it; returns a summary.

    Protocol: SGD (momentum, weight decay) with the poly schedule lr (1 - step/steps)^lr_power per
    iteration; random ``crop`` + horizontal ``flip``; loss = pixel cross entropy (void ignored)
    + ``cr_weight`` x :meth:`SegUNet.cr_loss` (``cr_scale``, ``cr_normalize``) when cr_weight > 0.
    Validation mIoU every ``eval_every`` epochs. An atomic checkpoint after every epoch; a rerun
    resumes from it (the batch order and the crops depend only on the seed and the epoch).

    At the end, on the full 240 x 180 frames: the test confusion matrix, per-class IoU and mIoU
    (tables ``test_iou``, arrays ``confusion``), and the collapse metrics of the pixel features
    against the learned classifier on train and test (and of the CR projection against the fixed
    ETF when the branch exists): table ``collapse``, arrays ``geometry`` (class means, cosines).
    ``n_train`` / ``n_eval`` (None: all) keep that many evenly spaced frames of train / val and
    test (smoke).
    """
    from . import data
    from .train import TensorBatches, resume_checkpoint, save_checkpoint

    _check_seg_config(cfg)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if progress is None:
        progress = os.environ.get("NCUTILS_PROGRESS", "1") != "0"
    xtr, ytr = data.load_camvid("train")
    xva, yva = data.load_camvid("val")
    xte, yte = data.load_camvid("test")
    xtr, ytr = (t[_spread(len(t), cfg["n_train"])] for t in (xtr, ytr))
    xva, yva = (t[_spread(len(t), cfg["n_eval"])] for t in (xva, yva))
    xte, yte = (t[_spread(len(t), cfg["n_eval"])] for t in (xte, yte))
    k = len(data.CAMVID_CLASSES)
    model = build_seg_model(cfg, k).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    batches = TensorBatches(xtr, ytr, batch_size=cfg["batch_size"], seed=cfg["seed"])
    total_steps = cfg["epochs"] * len(batches)
    ckpt_path, key = run.path / "checkpoint.pt", run.key
    history, start_epoch, wall = [], 1, 0.0
    state = resume_checkpoint(run, device, model, opt)
    if state is not None:
        history, start_epoch, wall = state["history"], state["epoch"] + 1, state["wall_seconds"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg["epochs"], initial=start_epoch - 1, desc=run.label or "segment", unit="ep")
    use_cr, done_here = cfg["cr_weight"] > 0, 0
    ceco_head = getattr(model, "ceco", None)
    from .ceco import class_weights, dropout_generator

    ce_weight = class_weights(cfg, k)
    ce_weight = None if ce_weight is None else ce_weight.to(device)
    for epoch in range(start_epoch, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + epoch)
        drop_gen = dropout_generator(cfg["seed"], epoch)
        step = (epoch - 1) * len(batches)
        lr0, ce_sum, cr_sum, nb = _poly_lr(cfg, step, total_steps), 0.0, 0.0, 0
        for xb, yb in batches.epoch(epoch):
            xb, yb = augment_batch(xb, yb, cfg["crop"], cfg["flip"], gen)
            x, y = data.camvid_to_float(xb).to(device), yb.to(device).long()
            for group in opt.param_groups:
                group["lr"] = _poly_lr(cfg, step, total_steps)
            logits, h = model.logits_and_features(x)
            if ce_weight is None:
                ce = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
            else:
                ce = F.cross_entropy(logits, y, weight=ce_weight, ignore_index=IGNORE_INDEX)
            loss, parts = ce, {"cross-entropy loss": float(ce.detach())}
            if use_cr and ceco_head is not None:
                cr = ceco_head.loss(h, y, generator=drop_gen)
                loss = ce + cfg["cr_weight"] * cr
                parts["CR loss"] = float(cr.detach())
            elif use_cr:
                cr = model.cr_loss(h, y, scale=float(cfg["cr_scale"]), normalize=bool(cfg["cr_normalize"]))
                loss = ce + cfg["cr_weight"] * cr
                parts["CR loss"] = float(cr.detach())
            bad = [f"{name} {v}" for name, v in parts.items() if not math.isfinite(v)]
            if bad:  # before the step: a NaN never reaches the weights or a checkpoint
                raise FloatingPointError(f"training diverged at epoch {epoch}, step {step + 1} ("
                                         f"{', '.join(bad)}); lower config['lr'] = {cfg['lr']}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ce_sum, cr_sum = ce_sum + parts["cross-entropy loss"], cr_sum + parts.get("CR loss", 0.0)
            nb, step = nb + 1, step + 1
        row = {"epoch": epoch, "lr": lr0, "train_loss": ce_sum / nb, "cr_loss": cr_sum / nb if use_cr else math.nan,
               "val_miou": math.nan, "val_pixel_accuracy": math.nan}
        if epoch % cfg["eval_every"] == 0 or epoch == cfg["epochs"]:
            val = evaluate_segmentation(model, xva, yva, device=device)
            row.update(val_miou=val["miou"], val_pixel_accuracy=val["pixel_accuracy"])
        wall += time.perf_counter() - t0
        row["epoch_seconds"] = time.perf_counter() - t0
        history.append(row)
        save_checkpoint(ckpt_path, {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "history": history, "wall_seconds": wall, "config_hash": key})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3g}", val_miou=f"{row['val_miou']:.3g}")
        done_here += 1
        if stop_after is not None and done_here >= stop_after and epoch < cfg["epochs"]:
            break
    if bar is not None:
        bar.close()
    run.save_table("history", [{c: r.get(c, math.nan) for c in SEG_HISTORY_COLUMNS} for r in history])
    last = history[-1]
    if last["epoch"] < cfg["epochs"]:
        return {"complete": False, "epochs_done": last["epoch"]}
    t0 = time.perf_counter()
    test = evaluate_segmentation(model, xte, yte, device=device, ncc=True)
    train_eval = evaluate_segmentation(model, xtr, ytr, device=device, ncc=True)
    results = [("train", "features", train_eval), ("test", "features", test)]
    if use_cr and model.cr_head is not None:
        results += [(split, "cr", evaluate_segmentation(model, xs, ys, device=device, branch="cr", ncc=True))
                    for split, xs, ys in (("train", xtr, ytr), ("test", xte, yte))]
    counts = torch.bincount(ytr[ytr != IGNORE_INDEX].long(), minlength=k)
    run.save_table("test_iou", [{"class_id": c, "class": data.CAMVID_CLASSES[c], "train_pixels": int(counts[c]),
                                 "iou": float(test["iou"][c]),
                                 "accuracy": float(test["confusion"].class_accuracy()[c])} for c in range(k)])
    from .metrics import EXTRA_KEYS, METRIC_KEYS

    nan_row = dict.fromkeys(METRIC_KEYS + EXTRA_KEYS, math.nan)  # a class absent from the split
    run.save_table("collapse", [{"split": split, "branch": branch,
                                 "classes_present": int((res["stats"].counts > 0).sum())
                                 if res["stats"].counts is not None else 0,
                                 **res.get("collapse", nan_row)} for split, branch, res in results])
    arrays = {"confusion": test["confusion"].matrix.numpy()}
    for split, branch, res in results:
        arrays |= _geometry_arrays(f"{split}_{branch}", res)
    run.save_arrays("geometry", **arrays)
    wall += time.perf_counter() - t0
    rare = [int(c) for c in torch.argsort(counts, stable=True)[:4]]  # the 4 rarest in train
    test_iou = test["iou"].tolist()
    return {"complete": True, "epochs_done": last["epoch"], "wall_seconds": wall,
            "test_miou": test["miou"], "test_pixel_accuracy": test["pixel_accuracy"],
            "rare_classes": [data.CAMVID_CLASSES[c] for c in rare],
            "test_rare_miou": float(torch.tensor([test_iou[c] for c in rare]).nanmean()),
            "final_val_miou": last["val_miou"], "train_frames": len(xtr), "test_frames": len(xte),
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in params),
            "train_nc1": train_eval.get("collapse", {}).get("nc1", math.nan)}


def seg_variant_label(variant: dict, seed: int) -> str:
    return f"{variant['name']}-s{seed}"


def planned_runs(preset: str, sweep: bool = False, seeds: Optional[Sequence[int]] = None) -> list:
    """The runs of ``camvid_cr`` at ``preset``, in the order :func:`run_segmentation` trains them:
    dicts with ``variant`` (name), ``seed``, ``label`` and ``config`` (as hashed). ``sweep=True``:
    the preset's ``lambda_sweep`` (the CR variant at each of its ``cr_weights``, variant names
    ``cr-lam<weight>``, by default on its own ``seeds``). The run manifest (:mod:`ncutils.jobs`)
    enumerates these too."""
    from . import checks
    from . import config as _config

    exp = _config.get_preset("camvid_cr", preset)
    variants, all_seeds, lam = exp.pop("variants"), exp.pop("seeds"), exp.pop("lambda_sweep", None)
    if sweep:
        if not lam:
            raise ValueError(f"preset {preset!r} of camvid_cr defines no lambda_sweep")
        variants = [{"name": f"cr-lam{w:g}", "cr_weight": w} for w in lam["cr_weights"]]
        all_seeds = lam["seeds"]
    seeds = checks.check_seeds(list(all_seeds) if seeds is None else seeds, "seeds")
    return [{"variant": variant["name"], "seed": seed, "label": seg_variant_label(variant, seed),
             "config": {**exp, **{k: v for k, v in variant.items() if k != "name"}, "seed": seed}}
            for seed in seeds for variant in variants]


def run_segmentation(preset: str, force: bool = False, device=None, progress: Optional[bool] = None,
                     only: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None,
                     sweep: bool = False) -> dict:
    """Load or train every run of the ``camvid_cr`` experiment at ``preset``:
    ``{(variant name, seed): Run}``. ``only`` restricts to variant names, ``seeds`` to seeds.

    ``sweep=True`` runs the preset's ``lambda_sweep`` instead: the CR variant at each of its
    ``cr_weights`` (variant names ``cr-lam<weight>``), by default on its own ``seeds``.
    ``force`` and ``sweep`` must be bools (a string is refused); a name of ``only`` that is no
    variant is an error listing the variants; ``seeds`` must be integers >= 0. The runs are those
    of :func:`planned_runs`.
    """
    from . import checks
    from .store import load_or_run

    force, sweep = checks.check_bool(force, "force"), checks.check_bool(sweep, "sweep")
    plan = planned_runs(preset, sweep=sweep, seeds=seeds)
    names = list(dict.fromkeys(p["variant"] for p in plan))
    if only is not None:
        only = [only] if isinstance(only, str) else list(only)
        wrong = [o for o in only if o not in names]
        if wrong or not only:
            raise ValueError(f"only must be a list of variant names of camvid_cr{' (sweep)' if sweep else ''} "
                             f"at preset {preset!r}: {wrong or only!r} matched nothing; valid choices: {names}")
    runs = {}
    for p in plan:
        if only is not None and p["variant"] not in only:
            continue
        cfg = p["config"]
        runs[(p["variant"], p["seed"])] = load_or_run(
            "camvid_cr", preset, cfg, lambda r, c=cfg: train_segmentation(r, c, device=device, progress=progress),
            label=p["label"], force=force, device=device)
    return runs
