"""Named presets (``smoke``, ``cpu``, ``paper``) per experiment, and a stable config hash.

Preset contents live here and never in notebooks: a chapter names an experiment and a preset and
gets a plain dict back. ``smoke`` proves the code path in seconds on a CPU; ``cpu`` fits a laptop
CPU (about 30 minutes a chapter) and is large enough for the paper's qualitative claim to show;
``paper`` is the published protocol, for a GPU.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math

__all__ = ["PRESET_NAMES", "PRESETS", "get_preset", "config_hash", "paper_lr_grid", "snapshot_epochs"]

PRESET_NAMES = ("smoke", "cpu", "paper")


def paper_lr_grid() -> list[float]:
    """Papyan et al.'s learning-rate grid: 25 values log-spaced in [1e-4, 0.25]."""
    lo, hi = math.log10(1e-4), math.log10(0.25)
    return [10 ** (lo + (hi - lo) * i / 24) for i in range(25)]


# The Papyan et al. (2020) training protocol; experiments override what differs.
_PAPYAN = dict(optimizer="sgd", momentum=0.9, weight_decay=5e-4, batch_size=128,
               lr_milestones=(1 / 3, 2 / 3), lr_gamma=0.1, augment=False)

# Chapter 3's four ResNet18 variants, the baseline (learned classifier, default d) first. As in Zhu et
# al.'s code (tding1/Neural-Collapse), the fixed-ETF classifier keeps a trainable bias.
_ETF_VARIANTS = ({"classifier": "learned", "feature_dim": None},
                 {"classifier": "etf", "feature_dim": None, "etf_bias": True},
                 {"classifier": "learned", "feature_dim": 10},
                 {"classifier": "etf", "feature_dim": 10, "etf_bias": True})
# Chapter 3's side-by-side row of the memory table only: d = K with both 3x3 convolutions of the last
# block shrunk (the book's earlier construction, not the authors').
_ETF_BOTH_CONVS = {"classifier": "etf", "feature_dim": 10, "etf_bias": True, "fixdim_block": "both"}
# Chapter 3's memory measurement: the full-width ResNet18 at the paper's batch 128 (and 2, 8, 32; batch
# 1 is impossible with the 7x7 stem: BatchNorm sees one value per channel at 1x1 pixels), on
# both stems of the authors' code: "cifar" (3x3, their --SOTA runs) and "imagenet" (their default:
# 7x7 stride 2 + max-pool), for CIFAR-10's 3x32x32 input (which the authors also feed their MNIST runs;
# the book's 1x28x28 is left out to halve the CPU time of the measurement).
_FULL_RESNET18_MEMORY = dict(arch="resnet18", width=64, batch_sizes=(2, 8, 32, 128),
                             inputs=((3, 32),), stems=("cifar", "imagenet"), num_classes=10,
                             warmup_steps=1, extra_variants=(_ETF_BOTH_CONVS,))

# Chapter 4's protocol (segmentation): SGD + poly schedule, crops and flips, the CR-loss settings.
_SEG = dict(lr=0.05, lr_power=0.9, momentum=0.9, weight_decay=5e-4, flip=True, cr_scale=5.0,
            cr_normalize=True, cr_frozen=True)
# Chapter 4's two variants: pixel cross entropy alone (baseline) and with the CR loss (lambda 0.4).
_SEG_VARIANTS = ({"name": "baseline", "cr_weight": 0.0}, {"name": "cr", "cr_weight": 0.4})

# Chapter 2's grid of K sqrt(n lambda_W lambda_H) (the UFM minimizer is 0 above 1), cpu and paper.
_UFM_KC_GRID = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 0.95, 1.1, 1.5, 2.0)

PRESETS: dict[str, dict[str, dict]] = {
    # Chapter 1: NC1-NC4 in the terminal phase of training.
    "terminal_phase": {
        "smoke": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("mlp",), epochs=3,
                      n_snapshots=3, test_per_class=20, snapshot_every=2,
                      per_arch={"mlp": dict(lr=0.05, width=64, n_per_class=20)},
                      lr_sweep={"fashionmnist:mlp": (0.025, 0.05)}),
        # The paper's protocol (SGD, momentum 0.9, wd 5e-4, batch 128, lr / 10 at 1/3 and 2/3, no
        # augmentation) at CPU scale: keep the SGD steps, shrink the data. 100 images per class
        # (8 steps an epoch); the conv nets 1,000 epochs (8,000 steps), the MLP 6,000 (48,000). Test
        # set: the full 10,000 images, evaluated at the snapshot epochs. lr: the paper's grid value
        # closest to 0.0675 (grid[20]), and for VGG11 on FashionMNIST a sweep over three grid values
        # with the best final test error chosen, as the paper chose per dataset and network.
        "cpu": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("mlp", "resnet18", "vgg11"),
                    n_snapshots=30, test_per_class=None,
                    per_arch={"mlp": dict(lr=paper_lr_grid()[20], width=512, n_per_class=100, epochs=6000,
                                          snapshot_every=250),
                              "resnet18": dict(lr=paper_lr_grid()[20], width=8, n_per_class=100,
                                               epochs=1000, snapshot_every=50),
                              "vgg11": dict(lr=paper_lr_grid()[20], width=8, n_per_class=100, epochs=1000,
                                            snapshot_every=50)},
                    lr_sweep={"fashionmnist:vgg11": tuple(paper_lr_grid()[i] for i in (19, 20, 21))}),
        # Full balanced train sets (MNIST subsampled to 5,421 per class); every (dataset, network)
        # pair swept over four values of the paper's 25-value grid, the best final test error kept.
        "paper": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("resnet18", "vgg11"),
                      epochs=350, n_snapshots=40, test_per_class=None,
                      per_arch={a: dict(lr=paper_lr_grid()[21], width=64, n_per_class=None)
                                for a in ("resnet18", "vgg11")},
                      lr_sweep={f"{d}:{a}": tuple(paper_lr_grid()[i] for i in (17, 19, 21, 23))
                                for d in ("mnist", "fashionmnist") for a in ("resnet18", "vgg11")}),
    },
    # Chapter 3: fix the classifier to a simplex ETF and set d = K (Zhu et al. 2021), measured.
    # Four variants of ResNet18: learned vs fixed-ETF classifier x default d (8 x width) vs d = K = 10
    # (only the last residual block changes, as in the authors' code: fixdim_block="authors"); the
    # first variant is the baseline. The stem is the authors' default (7x7 stride 2 + max-pool, which
    # their MNIST runs use). `seeds`: the seeds the chapter trains every variant with (one run per
    # seed; not part of a run's config). `memory` is the one-step memory measurement (python -m
    # ncutils.memory). Training protocol: SGD lr 0.05, momentum 0.9, wd 5e-4, batch 128, lr x 0.1
    # every 40 of 200 epochs (cpu: every 10 of 50).
    "fixed_etf": {
        "smoke": dict(_PAPYAN, datasets=("mnist",), archs=("resnet18",),
                      variants=_ETF_VARIANTS, seeds=(0,), stem="imagenet", fixdim_block="authors",
                      n_per_class=5, test_per_class=5, epochs=2, lr_milestones=(1,), n_snapshots=2,
                      per_arch={"resnet18": dict(lr=0.05, width=2)},
                      memory=dict(arch="resnet18", width=4, batch_sizes=(2, 4), inputs=((1, 28),),
                                  stems=("cifar", "imagenet"), num_classes=10, warmup_steps=1,
                                  extra_variants=(_ETF_BOTH_CONVS,))),
        # Training at CPU scale: ResNet18 narrowed to width 8 (d = 64 by default), 100 images per
        # class, 50 epochs, 3 seeds; the full test sets (10,000 images), evaluated at the snapshot
        # epochs. Memory: the full-width ResNet18 at the paper's batch 128 and smaller.
        "cpu": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("resnet18",),
                    variants=_ETF_VARIANTS, seeds=(0, 1, 2), stem="imagenet", fixdim_block="authors",
                    n_per_class=100, test_per_class=None, epochs=50, lr_milestones=(10, 20, 30, 40),
                    n_snapshots=15, per_arch={"resnet18": dict(lr=0.05, width=8)},
                    memory=_FULL_RESNET18_MEMORY),
        "paper": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("resnet18",),
                      variants=_ETF_VARIANTS, seeds=(0, 1, 2), stem="imagenet", fixdim_block="authors",
                      n_per_class=None, test_per_class=None, epochs=200,
                      lr_milestones=(40, 80, 120, 160), n_snapshots=30,
                      per_arch={"resnet18": dict(lr=0.05, width=64)},
                      memory=_FULL_RESNET18_MEMORY),
    },
    # Chapter 2: the landscape of the unconstrained features model (Zhu et al. 2021). (K, n, d) is
    # the main problem (d > K, as Theorem 3.2 needs); `hess` the instance for the dense Hessian
    # table and the slices, `lanczos` a larger one whose Hessian is only touched through
    # Hessian-vector products; `sweep_kc` are values of K sqrt(n lambda_W lambda_H) (the
    # minimizer is 0 above 1), `sweep_ratios` values of lambda_W / lambda_H. `paper`: K = 10 and
    # d = 512 (ResNet18 features on CIFAR10) with n = 5000 images a class and weight decay 5e-4.
    "ufm": {
        "smoke": dict(K=3, n=2, d=5, lambda_W=5e-3, lambda_H=5e-3, lambda_b=5e-3,
                      path_init_scales=(1.0, 1e-3), path_seeds=1, path_points=15, gd_lr=5.0,
                      gd_max_iter=300, sweep_kc=(0.2, 0.6, 1.5), sweep_ratios=(1.0,),
                      n_seeds=4, gd_seeds=1, seed_init_scales=(1e-3, 0.1, 1.0, 3.0),
                      hess=dict(K=3, n=2, d=5), lanczos=dict(K=3, n=5, d=5), slice_points=11,
                      dims=(1, 2, 5), dim_seeds=2),
        "cpu": dict(K=10, n=20, d=12, lambda_W=5e-3, lambda_H=5e-3, lambda_b=5e-3,
                    path_init_scales=(1.0, 1e-3), path_seeds=3, path_points=80, gd_lr=5.0,
                    gd_max_iter=5000,
                    sweep_kc=_UFM_KC_GRID,
                    sweep_ratios=(0.1, 1.0, 10.0), n_seeds=50, gd_seeds=10,
                    seed_init_scales=(1e-3, 0.1, 1.0, 3.0), hess=dict(K=10, n=20, d=12),
                    lanczos=dict(K=10, n=100, d=20), slice_points=41,
                    dims=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12), dim_seeds=6),
        "paper": dict(K=10, n=5000, d=512, lambda_W=5e-4, lambda_H=5e-4, lambda_b=5e-4,
                      path_init_scales=(1.0, 1e-3), path_seeds=3, path_points=100, gd_lr=5.0,
                      gd_max_iter=100_000,
                      sweep_kc=_UFM_KC_GRID,
                      sweep_ratios=(0.1, 1.0, 10.0), n_seeds=100, gd_seeds=20,
                      seed_init_scales=(1e-3, 0.1, 1.0, 3.0), hess=dict(K=10, n=20, d=12),
                      lanczos=dict(K=10, n=5000, d=512), slice_points=81,
                      dims=(1, 2, 3, 5, 8, 9, 10, 12, 64, 512), dim_seeds=10),
    },
    # Chapter 4: imbalanced segmentation and the center-collapse (CR) loss (Zhong et al. 2023) on
    # CamVid (240 x 180 frames, 11 classes, void ignored). Two variants trained identically: the
    # pixel cross entropy alone, and with the CR branch (lambda = cr_weight; the centers go through a
    # frozen random 1x1 projection, are L2-normalized, and their logits against the fixed ETF are
    # scaled by cr_scale, as in the authors' code). SGD with the poly schedule (power 0.9).
    "camvid_cr": {
        "smoke": dict(_SEG, widths=(4, 8), feature_dim=16, cr_dim=16, crop=(64, 64), batch_size=4,
                      epochs=2, eval_every=1, n_train=12, n_eval=8, seeds=(0,), variants=_SEG_VARIANTS,
                      lambda_sweep=dict(cr_weights=(0.2, 0.8), seeds=(0,))),
        # A compact U-Net (widths 8-64, 32-channel pixel features, 117k parameters) on random
        # 128 x 128 crops, 60 epochs (2,760 steps of 8 crops), 3 seeds per variant. lambda_sweep:
        # the CR variant at other weights lambda (one seed at this preset).
        "cpu": dict(_SEG, widths=(8, 16, 32, 64), feature_dim=32, cr_dim=32, crop=(128, 128),
                    batch_size=8, epochs=60, eval_every=10, n_train=None, n_eval=None, seeds=(0, 1, 2),
                    variants=_SEG_VARIANTS, lambda_sweep=dict(cr_weights=(0.2, 0.8), seeds=(0,))),
        # For a GPU: a wider U-Net (widths 32-256, 64-channel features) on full frames, 200 epochs.
        "paper": dict(_SEG, widths=(32, 64, 128, 256), feature_dim=64, cr_dim=64, crop=None,
                      batch_size=8, epochs=200, eval_every=10, n_train=None, n_eval=None,
                      seeds=(0, 1, 2), variants=_SEG_VARIANTS,
                      lambda_sweep=dict(cr_weights=(0.2, 0.8), seeds=(0, 1, 2))),
    },
}


def get_preset(experiment: str, preset: str) -> dict:
    """A deep copy of the settings of ``experiment`` at ``preset``."""
    if experiment not in PRESETS:
        raise ValueError(f"experiment must be one of {sorted(PRESETS)}, got {experiment!r}")
    if preset not in PRESETS[experiment]:
        raise ValueError(f"preset must be one of {list(PRESETS[experiment])} for experiment "
                         f"{experiment!r}, got {preset!r}")
    return copy.deepcopy(PRESETS[experiment][preset])


def _canonical(obj):
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        return float(repr(obj))
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise TypeError(f"config values must be JSON-like (dict, list, str, number, bool, None), "
                    f"got {type(obj).__name__}")


def config_hash(config: dict, length: int = 10) -> str:
    """A stable hex digest of a JSON-like config (key order and tuple/list do not matter)."""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def snapshot_epochs(epochs: int, n_snapshots: int) -> list[int]:
    """About ``n_snapshots`` log-spaced epochs in 1..epochs, always including the first and last."""
    if epochs < 1 or n_snapshots < 1:
        raise ValueError(f"epochs and n_snapshots must be >= 1, got {epochs} and {n_snapshots}")
    if n_snapshots == 1:
        return [epochs]
    pts = {round(math.exp(math.log(epochs) * i / (n_snapshots - 1))) for i in range(n_snapshots)}
    return sorted(pts | {1, epochs})
