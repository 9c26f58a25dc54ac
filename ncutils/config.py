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
import numbers

__all__ = ["PRESET_NAMES", "PRESETS", "get_preset", "config_hash", "plain_config", "paper_lr_grid", "snapshot_epochs"]

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

# Chapter 5's Layer-Peeled Model (Fang et al. 2021, the authors' optimization.py): K = 10 classes,
# K_A = 5 majority, E_H = 5, E_W = 1, R = 10^(0.1 i) for i = 0..40; the first-order solver is
# checked against the convex relaxation at check_ratios; the onset of collapse is bisected in
# threshold_bracket.
_LPM = dict(K=10, K_A=5, E_H=5.0, E_W=1.0, ratios=tuple(10 ** (0.1 * i) for i in range(41)),
            check_ratios=(1.0, 10.0, 100.0, 1000.0), fo_restarts=3, fo_max_iter=100_000,
            threshold_bracket=(10.0, 10 ** 1.1), threshold_rel_tol=1e-4)
# Chapter 5's networks: 5 majority classes (0-4) of n_major images and 5 minority classes (5-9) of
# n_major // R, trained with the Papyan protocol; `remedies` at R = remedy_ratio: oversampling the
# minority classes by each factor (Fang et al.'s Figure 6) and the fixed simplex-ETF classifier.
# Per-arch `steps`: SGD steps per run (epochs = steps / steps per epoch, so every R gets the same
# number of steps), or `epochs` as published.
_MINORITY_NET = dict(_PAPYAN, K_A=5, n_snapshots=30)
# Chapter 6's arms (Harun et al. 2025): the entropy regularizer (weight alpha) on the encoder output
# and the fixed simplex-ETF projector, each alone and together; the plain network first.
_OOD_ARMS = ({"name": "plain", "alpha": 0.0, "projector": False},
             {"name": "entropy", "alpha": 0.05, "projector": False},
             {"name": "etf", "alpha": 0.0, "projector": True},
             {"name": "both", "alpha": 0.05, "projector": True})
# Their protocol (vgg/pretrain_vgg_nc.sh): AdamW lr 0.006, weight decay 0.05, label smoothing 0.1,
# 5 warm-up epochs then cosine, projector d -> 4d -> d. ID: 5 FashionMNIST classes (T-shirt, trouser,
# pullover, dress, coat); near OOD: the other 5; far OOD: MNIST. Probes: scikit-learn logistic
# regression (C = 1) on standardized frozen features.
_HARUN = dict(id_dataset="fashionmnist", id_classes=(0, 1, 2, 3, 4), far_dataset="mnist", lr=6e-3,
              weight_decay=0.05, label_smoothing=0.1, hidden_mult=4, warmup_epochs=5, probe_C=1.0,
              probe_max_iter=1000, arms=_OOD_ARMS)

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
        # set: the test split balanced to its rarest class (FashionMNIST 10,000 images, MNIST 8,920),
        # evaluated at the snapshot epochs. lr: the paper's grid value
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
        # class, 50 epochs, 3 seeds; the full test sets (10,000 images each: MNIST's as it is,
        # test_per_class="all", its classes 892 to 1,135 images; FashionMNIST's is balanced, 1,000 a
        # class), evaluated at the snapshot epochs. Memory: the full-width ResNet18 at the paper's
        # batch 128 and smaller.
        "cpu": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("resnet18",),
                    variants=_ETF_VARIANTS, seeds=(0, 1, 2), stem="imagenet", fixdim_block="authors",
                    n_per_class=100, test_per_class=None, epochs=50, lr_milestones=(10, 20, 30, 40),
                    n_snapshots=15, per_arch={"resnet18": dict(lr=0.05, width=8)},
                    per_dataset={"mnist": dict(test_per_class="all")},
                    memory=_FULL_RESNET18_MEMORY),
        "paper": dict(_PAPYAN, datasets=("mnist", "fashionmnist"), archs=("resnet18",),
                      variants=_ETF_VARIANTS, seeds=(0, 1, 2), stem="imagenet", fixdim_block="authors",
                      n_per_class=None, test_per_class=None, epochs=200,
                      lr_milestones=(40, 80, 120, 160), n_snapshots=30,
                      per_arch={"resnet18": dict(lr=0.05, width=64)},
                      per_dataset={"mnist": dict(test_per_class="all")},
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
    # Chapter 6: collapse per layer vs OOD detection and transfer (Harun, Gallardo & Kanan 2025).
    "nc_ood": {
        "smoke": dict(_HARUN, arch="vgg11", width=2, n_per_class=16, test_per_class=10,
                      probe_train_per_class=10, probe_test_per_class=10, epochs=2, warmup_epochs=1,
                      batch_size=32, seeds=(0,)),
        # VGG11-BN narrowed to width 8 (d = 64, projector 64 -> 256 -> 64), 1,500 training images per
        # ID class (15 steps of 512 an epoch), the authors' 100 epochs (1,500 AdamW steps), 5 seeds per
        # arm. Measured: 0.33 CPU-seconds a step, about 9.5 minutes a run with its analysis, so the 20
        # runs take about 95 minutes on 2 processes. Probes: 200 images per class to train and to test.
        "cpu": dict(_HARUN, arch="vgg11", width=8, n_per_class=1500, test_per_class=None,
                    probe_train_per_class=200, probe_test_per_class=200, epochs=100, batch_size=512,
                    seeds=(0, 1, 2, 3, 4)),
        # For a GPU: VGG11-BN at full width (d = 512, projector 512 -> 2048 -> 512 as the authors'),
        # all 30,000 ID training images, the authors' 100 epochs at batch 512, 3 seeds.
        "paper": dict(_HARUN, arch="vgg11", width=64, n_per_class=None, test_per_class=None,
                      probe_train_per_class=1000, probe_test_per_class=None, epochs=100, batch_size=512,
                      seeds=(0, 1, 2)),
    },
}


PRESETS["minority_collapse"] = {
    "smoke": dict(model=dict(_LPM, ratios=(1.0, 10.0, 100.0), check_ratios=(1.0, 100.0), fo_restarts=1,
                             fo_max_iter=20_000, threshold_rel_tol=1e-2),
                  networks=dict(_MINORITY_NET, runs=(("fashionmnist", "mlp"),), n_major=20, ratios=(1, 10),
                                remedy_ratio=10, oversample=(10,), etf_remedy=True,
                                remedies_for=(("fashionmnist", "mlp"),), remedy_seeds=(0, 1),
                                remedy_seeds_for=(("fashionmnist", "mlp"),), test_per_class=20, n_snapshots=3,
                                per_arch={"mlp": dict(lr=0.05, width=32, steps=24)})),
    # 1,000 images per majority class (R = 1000 leaves one image per minority class). The MLP
    # (3 x 512) on both datasets with 90,000 SGD steps a run (30,000 at the initial lr, about
    # 1 / (lr wd)), with both remedies at R = 1000 (oversampling by 1000 = R: each epoch sees the
    # minority classes as often as the majority ones); VGG11 (width 8, d = 64, chapter 1's cpu
    # width; width 16 costs 3x as much a step) on FashionMNIST with 9,000 steps a run. The R = 1000
    # runs of the FashionMNIST MLP (the paper's dataset; plain and both remedies) also with seeds 1
    # and 2, so the remedies are compared paired by seed (remedy_seeds). The VGG11 runs and those
    # seeds evaluate the training error every 10th epoch (and at every snapshot) rather than every
    # epoch: training is bit for bit the same, the evaluation took about a quarter of a run's time.
    # minority.cost_estimate("cpu") counts the steps with the step costs measured alone; two
    # processes on the 2 cores slow each down: measured, an MLP run takes about 29 minutes (an
    # epoch of 79 steps plus its training-set evaluation about 1.5 s), so the 18 MLP runs take
    # about 4.4 hours of the two processes' time together, and the 4 VGG11 runs more (see the
    # chapter's measured training minutes).
    "cpu": dict(model=dict(_LPM),
                networks=dict(_MINORITY_NET, runs=(("mnist", "mlp"), ("fashionmnist", "mlp"),
                                                   ("fashionmnist", "vgg11")),
                              n_major=1000, ratios=(1, 10, 100, 1000), remedy_ratio=1000,
                              oversample=(1000,), etf_remedy=True,
                              remedies_for=(("mnist", "mlp"), ("fashionmnist", "mlp")),
                              remedy_seeds=(0, 1, 2), remedy_seeds_for=(("fashionmnist", "mlp"),),
                              seed_overrides={"train_eval_every": 10}, test_per_class=None,
                              per_arch={"mlp": dict(lr=paper_lr_grid()[20], width=512, steps=90_000),
                                        "vgg11": dict(lr=paper_lr_grid()[20], width=8, steps=9_000,
                                                      train_eval_every=10)})),
    # The authors' train_models.py: 6,000 images per majority class (MNIST: 5,000, its smallest
    # class has 5,421), 350 epochs, lr 0.1, VGG11 and ResNet18 at full width; oversampling by 10,
    # 100 and 1,000 at R = 1000 (train_models_oversampling.py), and the fixed ETF.
    "paper": dict(model=dict(_LPM),
                  networks=dict(_MINORITY_NET, runs=tuple((d, a) for d in ("fashionmnist", "mnist")
                                                          for a in ("vgg11", "resnet18")),
                                n_major={"fashionmnist": 6000, "mnist": 5000}, ratios=(1, 10, 100, 1000),
                                remedy_ratio=1000, oversample=(10, 100, 1000), etf_remedy=True,
                                remedies_for=tuple((d, a) for d in ("fashionmnist", "mnist")
                                                   for a in ("vgg11", "resnet18")),
                                remedy_seeds=(0, 1, 2), remedy_seeds_for=(("fashionmnist", "vgg11"),),
                                test_per_class=None, n_snapshots=40,
                                per_arch={a: dict(lr=0.1, width=64, epochs=350) for a in ("vgg11", "resnet18")})),
}


# Chapter 4's second study (issue 13): the authors' center-collapse head and the controls that
# isolate it, trained identically (same initial weights of the shared U-Net, same batches, same
# steps). Settings not listed in a variant are camvid_cr's at the same preset, so the baseline and
# the simplified branch (stored as "cr", lambda 0.4) are the committed camvid_cr runs at their seeds;
# ncutils.ceco.run_ceco stores every run under the camvid_cr experiment. Variants:
#   baseline   pixel cross entropy alone;
#   ceco       + the authors' UPerHead_ceco branch (frozen 1x1 conv without bias + BatchNorm to 128
#              channels, centers over the whole batch, frozen Linear(128, 512) + ReLU, L2 norm,
#              dropout 0.1, frozen simplex ETF in 512 dimensions with zero bias, scale 5, logit
#              adjustment by the log of the share of training frames containing each class), weight
#              0.8 (their Swin-T config);
#   cecol      their UPerHead_cecol ablation with their cecol config: the same branch with a random
#              frozen classifier (nn.Linear default init, bias included), no normalization, scale 1,
#              label smoothing 0.5, weight 1.0;
#   wce        a re-balancing control: class-weighted pixel cross entropy, median-frequency weights
#              (Eigen & Fergus 2015, as SegNet used on CamVid) from the training split;
#   cr_simple  the book's first, simplified branch (frozen random 1x1 conv with bias to 32 channels, ETF in 32
#              dimensions, no prior), lambda 0.4.
_CECO_HEAD = dict(cr_head="ceco", ceco_dim=128, ceco_gain_dim=512, ceco_dropout=0.1, ceco_smooth=1.0,
                  ceco_prior="image_label")


def _ceco_variants(main_seeds, control_seeds):
    return ({"name": "baseline", "cr_weight": 0.0, "seeds": main_seeds},
            {"name": "ceco", "cr_weight": 0.8, **_CECO_HEAD, "seeds": main_seeds},
            {"name": "cecol", "cr_weight": 1.0, **_CECO_HEAD, "cr_head": "cecol", "cr_scale": 1.0,
             "cr_normalize": False, "ceco_smooth": 0.5, "seeds": control_seeds},
            {"name": "wce", "cr_weight": 0.0, "class_weighting": "median_frequency", "seeds": control_seeds},
            {"name": "cr_simple", "label": "cr", "cr_weight": 0.4, "seeds": control_seeds})


def _ceco_study(preset: str, main_seeds, control_seeds) -> dict:
    base = {k: v for k, v in PRESETS["camvid_cr"][preset].items()
            if k not in ("variants", "seeds", "lambda_sweep")}
    return dict(base, variants=_ceco_variants(main_seeds, control_seeds))


PRESETS["camvid_ceco"] = {
    "smoke": _ceco_study("smoke", (0, 1), (0, 1)),
    # 5 seeds of the baseline and of the authors' head, 3 of each control (60 epochs each).
    "cpu": _ceco_study("cpu", (0, 1, 2, 3, 4), (0, 1, 2)),
    "paper": _ceco_study("paper", (0, 1, 2, 3, 4), (0, 1, 2)),
}


def get_preset(experiment: str, preset: str) -> dict:
    """A deep copy of the settings of ``experiment`` at ``preset``."""
    if experiment not in PRESETS:
        raise ValueError(f"experiment must be one of {sorted(PRESETS)}, got {experiment!r}")
    if preset not in PRESETS[experiment]:
        raise ValueError(f"preset must be one of {list(PRESETS[experiment])} for experiment "
                         f"{experiment!r}, got {preset!r}")
    return copy.deepcopy(PRESETS[experiment][preset])


def _canonical(obj, path: str = "config", sort: bool = True):
    """Plain JSON types of a config (NumPy scalars become Python numbers); errors name the key."""
    if isinstance(obj, dict):
        items = sorted(obj.items()) if sort else obj.items()
        return {str(k): _canonical(v, f"{path}[{k!r}]", sort) for k, v in items}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{path}[{i}]", sort) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    kind = type(obj).__module__.split(".")[0]
    if kind == "numpy" and type(obj).__name__ in ("bool", "bool_"):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)  # numpy integers hash as the Python int
    if isinstance(obj, float) or (kind == "numpy" and isinstance(obj, numbers.Real)):
        return float(obj)  # np.float64(x) hashes as the Python float x
    raise TypeError(f"config values must be JSON-like (dict, list, str, number, bool, None); "
                    f"{path} is a {type(obj).__name__}: {obj!r}")


def plain_config(config: dict) -> dict:
    """A copy of ``config`` with plain JSON types (tuples become lists, NumPy scalars Python
    numbers), keys in their order: what ``run.json`` stores and :func:`config_hash` hashes."""
    return _canonical(config, sort=False)


def config_hash(config: dict, length: int = 10) -> str:
    """A stable hex digest of a JSON-like config (key order and tuple/list do not matter; a NumPy
    scalar hashes as the equal Python number)."""
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
