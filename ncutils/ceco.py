r"""The authors' center-collapse head (``UPerHead_ceco`` / ``UPerHead_cecol``) and its controls.

Zhong et al. (2023) released their 2D segmentation code as ``GPaCo/Seg`` in
dvlab-research/Parametric-Contrastive-Learning (``mmseg/models/decode_heads/uper_head_ceco.py``,
configs ``configs/ceco_ade20k/*_ceco.py``). During training only, from the decoder's pixel
features h (B x C x h x w) and the labels (B x H x W), their branch computes:

1. ``reduce``: a 1x1 convolution **without bias** + ``BatchNorm2d`` to 128 channels, both frozen
   (``requires_grad=False``); the BatchNorm is in train mode, so it normalizes with the batch
   statistics (and updates its running statistics, which nothing reads);
2. bilinear upsampling (``align_corners=True``) to the label resolution; the **centers** z_k are
   the means of the labelled pixels of each class present in the **whole batch** (void ignored);
3. ``gain``: a frozen ``Linear(128, 512)`` + ReLU on the centers;
4. ``ceco``: L2 normalization, then (dropout p = 0.1, the head's ``dropout_ratio``, which on a
   P x 512 input drops single entries) a frozen linear classifier whose weight is a simplex ETF in
   512 dimensions, ``sqrt(K/(K-1)) U (I - 11^T/K)`` with U the first K columns of a random
   orthogonal 512 x 512 matrix, rows normalized, and whose bias is zero; logits times ``scale`` (5).
   ``cecol`` (their ablation): no normalization, and the classifier is a frozen ``nn.Linear(512, K)``
   at its random default initialization (weight and bias);
5. loss: ``-(1/P) sum_k sum_j t_kj log softmax(logits_k + log(prior + 1e-12))_j`` with t the
   one-hot targets smoothed by ``smooth`` (1 = none; ``t = smooth`` on the class, ``(1 - smooth)
   / (K - 1)`` elsewhere) and ``prior`` the normalized count of **training images containing each
   class** (their ``stats/*_image_label_stats.txt``): logit adjustment. Weight ``img_cls_weight``
   (0.8 for Swin-T, 0.2 for Swin-B with ``ceco``; 1.0 with ``scale=1``, ``smooth=0.5`` in their
   ``cecol`` configs).

This module holds that head (:class:`CecoHead`), the CamVid tables it needs (images per class,
pixels per class: ``camvid_image_label_stats.txt`` and ``camvid_pix_label_stats.txt``, committed
next to this file, recomputed from the data by :func:`camvid_label_stats`), the median-frequency
class weights of the re-balancing control, and the ``camvid_ceco`` study (:func:`run_ceco`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .seg import IGNORE_INDEX, centers_cross_entropy, class_centers

__all__ = ["CECO_HEADS", "STATS_FILES", "label_counts", "camvid_label_stats", "read_stats_table",
           "write_stats_table", "committed_camvid_stats", "log_prior", "median_frequency_weights",
           "ceco_etf_weight", "CecoHead", "build_ceco_head", "class_weights", "dropout_generator",
           "STORE_EXPERIMENT", "run_ceco"]

CECO_HEADS = ("ceco", "cecol")
STATS_FILES = {"image": "camvid_image_label_stats.txt", "pixel": "camvid_pix_label_stats.txt"}
# The camvid_ceco study's runs live with chapter 4's first runs: a config identical to one of
# camvid_cr's (the baseline, the simplified CR branch at lambda 0.4) is the same run.
STORE_EXPERIMENT = "camvid_cr"


# ----------------------------------------------------------------------------- class statistics

def label_counts(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX):
    """``(images, pixels)``, int64 length K: the number of frames in which each class has at least
    one labelled pixel, and each class's labelled pixels. ``labels``: N x H x W integer class ids."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 3 or labels.is_floating_point():
        raise ValueError(f"labels must be an N x H x W integer tensor, got {getattr(labels, 'shape', labels)}")
    images = torch.zeros(num_classes, dtype=torch.int64)
    pixels = torch.zeros(num_classes, dtype=torch.int64)
    for frame in labels:
        y = frame[frame != ignore_index].long()
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"labels must lie in 0..{num_classes - 1} or equal ignore_index={ignore_index}")
        c = torch.bincount(y, minlength=num_classes)
        pixels += c
        images += (c > 0).long()
    return images, pixels


def camvid_label_stats(split: str = "train") -> dict:
    """``{"image": images per class, "pixel": pixels per class}`` of a CamVid split, recomputed
    from the label maps (what the committed tables hold for ``train``)."""
    from .data import CAMVID_CLASSES, load_camvid

    _, labels = load_camvid(split)
    images, pixels = label_counts(labels, len(CAMVID_CLASSES))
    return {"image": images, "pixel": pixels}


def read_stats_table(path, num_classes: int) -> torch.Tensor:
    """A table in the authors' format: one non-negative integer per line, one line per class."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class statistics table {path} is missing")
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) != num_classes or not all(ln.isdigit() for ln in lines):
        raise ValueError(f"{path} must hold {num_classes} lines of one non-negative integer each, "
                         f"got {len(lines)} lines: {lines[:3]}...")
    return torch.tensor([int(ln) for ln in lines], dtype=torch.int64)


def write_stats_table(path, counts: Sequence[int]) -> None:
    from .store import atomic_write

    atomic_write(path, "".join(f"{int(c)}\n" for c in counts))


def committed_camvid_stats(kind: str = "image") -> torch.Tensor:
    """The committed CamVid training-split table: ``"image"`` (frames containing each class, the
    authors' prior) or ``"pixel"`` (labelled pixels per class)."""
    from .data import CAMVID_CLASSES

    if kind not in STATS_FILES:
        raise ValueError(f"kind must be one of {sorted(STATS_FILES)}, got {kind!r}")
    return read_stats_table(Path(__file__).with_name(STATS_FILES[kind]), len(CAMVID_CLASSES))


def log_prior(counts) -> torch.Tensor:
    """``log(counts / sum(counts) + 1e-12)`` in float32, the authors' logit adjustment."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    if c.ndim != 1 or len(c) < 2 or not torch.isfinite(c).all() or (c < 0).any() or c.sum() <= 0:
        raise ValueError(f"counts must be a length-K vector of non-negative counts with a positive sum, got {counts!r}")
    return torch.log((c / c.sum()).float() + 1e-12)


def median_frequency_weights(pixel_counts, image_counts, pixels_per_image: int) -> torch.Tensor:
    """Median-frequency balancing (Eigen & Fergus 2015; SegNet's CamVid weights): with
    freq_c = pixels of class c / pixels of the frames containing c (all their pixels, void included),
    w_c = median(freq) / freq_c (float32). Every class must occur."""
    p = torch.as_tensor(pixel_counts, dtype=torch.float64)
    n = torch.as_tensor(image_counts, dtype=torch.float64)
    if p.shape != n.shape or p.ndim != 1 or (p <= 0).any() or (n <= 0).any():
        raise ValueError("pixel_counts and image_counts must be length-K vectors of positive counts "
                         f"(every class present), got {pixel_counts!r} and {image_counts!r}")
    if isinstance(pixels_per_image, bool) or not isinstance(pixels_per_image, int) or pixels_per_image < 1:
        raise ValueError(f"pixels_per_image must be a positive integer, got {pixels_per_image!r}")
    freq = p / (n * pixels_per_image)
    return (freq.median() / freq).float()


def class_weights(cfg: dict, num_classes: int) -> Optional[torch.Tensor]:
    """The pixel cross entropy's class weights of a config (``class_weighting``: None or
    ``"median_frequency"``, from the committed CamVid training-split tables)."""
    kind = cfg.get("class_weighting")
    if kind is None:
        return None
    if kind != "median_frequency":
        raise ValueError(f"config['class_weighting'] must be None or 'median_frequency', got {kind!r}")
    from .data import CAMVID_RESOLUTIONS

    w, h = CAMVID_RESOLUTIONS["240x180"]
    weights = median_frequency_weights(committed_camvid_stats("pixel"), committed_camvid_stats("image"), w * h)
    if len(weights) != num_classes:
        raise ValueError(f"the CamVid tables have {len(weights)} classes, the model {num_classes}")
    return weights


# ----------------------------------------------------------------------------- the head

def ceco_etf_weight(num_classes: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """The authors' ETF classifier weight (K x dim): U the first K columns of a Haar-random
    orthogonal dim x dim matrix (theirs: ``scipy.stats.ortho_group``; here a QR of a Gaussian drawn
    from ``generator``), ``E = sqrt(K/(K-1)) U (I - 11^T/K)``, transposed, rows normalized."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < num_classes:
        raise ValueError(f"dim must be an integer >= num_classes = {num_classes}, got {dim!r}")
    k = num_classes
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    u = (q * torch.sign(torch.diagonal(r)))[:, :k]
    etf = math.sqrt(k / (k - 1)) * u @ (torch.eye(k, dtype=torch.float64) - 1.0 / k)
    etf = etf.T
    return (etf / etf.norm(dim=-1, keepdim=True)).float()


class CecoHead(nn.Module):
    """The training-only branch of ``UPerHead_ceco`` (``kind="ceco"``) or ``UPerHead_cecol``
    (``kind="cecol"``) on top of ``in_channels``-channel pixel features; every weight frozen.

    ``reduce`` (Conv2d 1x1 without bias + BatchNorm2d), ``gain`` (Linear + ReLU) and ``classifier``
    (Linear, ETF weight and zero bias for ``ceco``; default random init for ``cecol``) are built in
    this order from the global RNG, as PyTorch's defaults, except the ETF, drawn from its own
    generator seeded with ``etf_seed``. ``log_prior``: a length-K tensor added to the logits
    (None: none), kept as a buffer. See :meth:`loss`.
    """

    def __init__(self, in_channels: int, num_classes: int, kind: str = "ceco", reduce_dim: int = 128,
                 gain_dim: int = 512, scale: float = 5.0, normalize: Optional[bool] = None,
                 smooth: float = 1.0, dropout: float = 0.1, log_prior: Optional[torch.Tensor] = None,
                 etf_seed: int = 0):
        super().__init__()
        if kind not in CECO_HEADS:
            raise ValueError(f"kind must be one of {CECO_HEADS}, got {kind!r}")
        for name, v in (("in_channels", in_channels), ("reduce_dim", reduce_dim), ("gain_dim", gain_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 <= smooth <= 1:
            raise ValueError(f"smooth must be a number in [0, 1] (1: no smoothing), got {smooth!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.kind, self.num_classes = kind, num_classes
        self.scale, self.smooth, self.dropout = float(scale), float(smooth), float(dropout)
        self.normalize = (kind == "ceco") if normalize is None else bool(normalize)
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, reduce_dim, kernel_size=1, padding=0, bias=False),
                                    nn.BatchNorm2d(reduce_dim))
        self.gain = nn.Sequential(nn.Linear(reduce_dim, gain_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(gain_dim, num_classes)
        if kind == "ceco":
            with torch.no_grad():
                gen = torch.Generator().manual_seed(int(etf_seed))
                self.classifier.weight.copy_(ceco_etf_weight(num_classes, gain_dim, gen))
                self.classifier.bias.zero_()
        for p in self.parameters():  # frozen, as in the authors' code
            p.requires_grad = False
        if log_prior is not None:
            log_prior = torch.as_tensor(log_prior, dtype=torch.float32)
            if log_prior.shape != (num_classes,) or not torch.isfinite(log_prior).all():
                raise ValueError(f"log_prior must be a finite length-{num_classes} vector, got shape "
                                 f"{tuple(log_prior.shape)}")
        self.register_buffer("log_prior", log_prior)

    def centers(self, features: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                fast: bool = True):
        """``(gain(centers) P x gain_dim, class ids P)``: reduce, upsample (bilinear,
        align_corners=True) to the labels' size, the centers of the classes present in the whole
        batch, then ``gain``.

        ``fast=False`` does exactly that. ``fast=True`` (the default) computes the same function with
        fewer operations: the conv is linear and the BatchNorm (train mode) an affine map per channel
        whose batch mean and variance are ``A mu`` and ``diag(A Sigma A^T)`` (A the conv weight,
        mu and Sigma the mean and biased covariance of the C-channel features over every pixel of the
        batch), and bilinear interpolation commutes with both; so the 128-d centers are
        ``BN(A c_k)`` with c_k the C-channel centers. The running statistics are updated as the
        BatchNorm would (momentum, unbiased variance). Equal to ``fast=False`` up to rounding
        (tested); about 4x cheaper at C = 32.
        """
        if not fast or self.reduce[1].momentum is None:
            z = self.reduce(features)
            if tuple(z.shape[-2:]) != tuple(labels.shape[-2:]):
                z = F.interpolate(z, size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=True)
            centers, ids = class_centers(z, labels, self.num_classes, ignore_index)
            return self.gain(centers), ids
        conv, bn = self.reduce
        up = features
        if tuple(features.shape[-2:]) != tuple(labels.shape[-2:]):
            up = F.interpolate(features, size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=True)
        centers, ids = class_centers(up, labels, self.num_classes, ignore_index)
        a = conv.weight.flatten(1)  # D x C
        if bn.training:
            flat = features.transpose(0, 1).reshape(features.shape[1], -1)  # C x (B h w), every pixel
            n = flat.shape[1]
            mu = flat.mean(1)
            dev = flat - mu[:, None]
            mean_z = a @ mu
            var_z = ((a @ (dev @ dev.T / n)) * a).sum(1)  # diag(A Sigma A^T), biased
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mean_z.detach())
                bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * var_z.detach() * n / max(n - 1, 1))
        else:
            mean_z, var_z = bn.running_mean, bn.running_var
        z = (centers @ a.T - mean_z) / torch.sqrt(var_z + bn.eps) * bn.weight + bn.bias
        return self.gain(z), ids

    def loss(self, features: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
             generator: Optional[torch.Generator] = None, fast: bool = True) -> torch.Tensor:
        """The authors' ``loss_img_cls`` (before its weight): dropout on the (normalized) centers
        with masks drawn from ``generator`` (CPU; only in train mode, p = ``dropout``), the frozen
        classifier, ``scale``, the log prior, the smoothed cross entropy averaged over the classes
        present. A batch without labelled pixels gives 0."""
        g, ids = self.centers(features, labels, ignore_index, fast=fast)
        if len(ids) == 0:
            return features.sum() * 0.0
        if self.normalize:
            g = F.normalize(g, dim=-1)
        if self.training and self.dropout > 0:
            keep = torch.rand(g.shape, generator=generator) >= self.dropout
            g = g * keep.to(g.device, g.dtype) / (1.0 - self.dropout)
        return centers_cross_entropy(g, ids, self.classifier.weight, bias=self.classifier.bias,
                                     scale=self.scale, normalize=False, log_prior=self.log_prior,
                                     smooth=self.smooth)


def build_ceco_head(cfg: dict, feature_dim: int, num_classes: int) -> CecoHead:
    """The :class:`CecoHead` of a segmentation config with ``cr_head`` in ``("ceco", "cecol")``:
    ``ceco_dim``, ``ceco_gain_dim``, ``cr_scale``, ``cr_normalize``, ``ceco_smooth``,
    ``ceco_dropout``, ``ceco_prior`` (``"image_label"``: the committed CamVid table; None: none);
    the ETF seeded with ``cfg['seed']``. Uses the global RNG (call it after the shared network)."""
    if not cfg.get("cr_frozen", True):
        raise ValueError("config['cr_frozen'] must be True with config['cr_head'] = "
                         f"{cfg['cr_head']!r}: the authors' head is frozen")
    prior = cfg.get("ceco_prior", "image_label")
    if prior not in ("image_label", None):
        raise ValueError(f"config['ceco_prior'] must be 'image_label' or None, got {prior!r}")
    lp = log_prior(committed_camvid_stats("image")) if prior else None
    if lp is not None and len(lp) != num_classes:
        raise ValueError(f"the CamVid image table has {len(lp)} classes, the model {num_classes}")
    return CecoHead(feature_dim, num_classes, kind=cfg["cr_head"], reduce_dim=cfg.get("ceco_dim", 128),
                    gain_dim=cfg.get("ceco_gain_dim", 512), scale=float(cfg["cr_scale"]),
                    normalize=bool(cfg["cr_normalize"]), smooth=float(cfg.get("ceco_smooth", 1.0)),
                    dropout=float(cfg.get("ceco_dropout", 0.1)), log_prior=lp, etf_seed=cfg["seed"])


def dropout_generator(seed: int, epoch: int) -> torch.Generator:
    """The head's dropout masks of one epoch: a CPU generator of (seed, epoch), separate from the
    crops' so the batches are the same with and without the head, and resuming stays exact."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) + 7_777_777_777)


# ----------------------------------------------------------------------------- the study

def ceco_variant_configs(preset: str) -> list:
    """``[(variant name, store label, seed, config)]`` of the ``camvid_ceco`` study at ``preset``."""
    from . import config as _config

    exp = _config.get_preset("camvid_ceco", preset)
    variants = exp.pop("variants")
    out = []
    for v in variants:
        extra = {k: val for k, val in v.items() if k not in ("name", "label", "seeds")}
        for seed in v["seeds"]:
            out.append((v["name"], v.get("label", v["name"]), seed, {**exp, **extra, "seed": seed}))
    return out


def run_ceco(preset: str, force: bool = False, device=None, progress: Optional[bool] = None,
             only: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None) -> dict:
    """Load or train every run of the ``camvid_ceco`` study at ``preset``: ``{(variant, seed): Run}``.

    Runs are stored under the ``camvid_cr`` experiment (:data:`STORE_EXPERIMENT`) with the label
    ``<store label>-s<seed>``: a variant whose config equals a committed ``camvid_cr`` run's (the
    baseline; ``cr_simple``, stored as ``cr``) loads that run. ``only``: variant names; ``seeds``:
    keep only these seeds (each variant keeps its own list otherwise)."""
    from .seg import train_segmentation
    from .store import load_or_run

    runs = {}
    for name, label, seed, cfg in ceco_variant_configs(preset):
        if (only is not None and name not in only) or (seeds is not None and seed not in seeds):
            continue
        runs[(name, seed)] = load_or_run(
            STORE_EXPERIMENT, preset, cfg,
            lambda r, c=cfg: train_segmentation(r, c, device=device, progress=progress),
            label=f"{label}-s{seed}", force=force, device=device)
    return runs


# ----------------------------------------------------------------------------- reading the study

def paired_interval(diff, level: float = 0.95) -> dict:
    """Mean of paired differences (one per seed) with its two-sided Student-t ``level`` interval:
    ``{"mean", "low", "high", "n", "sd"}``; the interval is NaN with fewer than 2 differences."""
    from .plotting import t_interval

    d = torch.as_tensor(diff, dtype=torch.float64).flatten()
    if len(d) == 0 or not torch.isfinite(d).all():
        raise ValueError(f"diff must be a non-empty vector of finite differences, got {diff!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    mean, half = t_interval(d.numpy(), level)
    sd = float(d.std(unbiased=True)) if len(d) > 1 else math.nan
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(d), "sd": sd}


def frequency_groups(train_pixels, head: int = 3, tail: int = 4) -> dict:
    """``{"head", "common", "tail"}``: class indices, the ``head`` most frequent classes by training
    pixels, the ``tail`` rarest, the rest common (each list most frequent first)."""
    counts = torch.tensor([float(c) for c in train_pixels], dtype=torch.float64)  # a copy: inputs may be read-only
    k = len(counts)
    if head < 1 or tail < 1 or head + tail >= k:
        raise ValueError(f"head and tail must be >= 1 with head + tail < K = {k}, got {head} and {tail}")
    order = torch.argsort(-counts, stable=True).tolist()
    return {"head": order[:head], "common": order[head:k - tail], "tail": order[k - tail:]}


def etf_cosine_deviation(cosines) -> torch.Tensor:
    """Per class k, the root mean square over j != k of cos(mu_k, mu_j) + 1/(K-1): how far class
    k's row of a K x K cosine matrix of centered class means is from a simplex ETF's (0 for one)."""
    c = cosines.detach().to(torch.float64) if isinstance(cosines, torch.Tensor) else \
        torch.tensor(np.asarray(cosines, dtype=np.float64))
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"cosines must be a K x K matrix with K >= 2, got shape {tuple(c.shape)}")
    k = c.shape[0]
    off = ~torch.eye(k, dtype=torch.bool)
    dev = (c + 1.0 / (k - 1))[off].view(k, k - 1)
    return dev.pow(2).mean(1).sqrt()
