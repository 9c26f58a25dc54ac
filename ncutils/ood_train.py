"""Chapter 6's experiment: train the four arms of Harun et al. (2025) and measure every layer.

Arms (``nc_ood`` presets in :mod:`ncutils.config`): ``plain`` (encoder + classifier), ``entropy``
(+ the entropy regularizer on the encoder output), ``etf`` (+ the fixed simplex-ETF projector) and
``both``. For a given seed every arm starts from the same encoder and classifier weights and sees the
same batches in the same order (:class:`ncutils.train.TensorBatches`); only the arm's ``alpha`` and
``projector`` differ.

Data: in-distribution (ID) = the ``id_classes`` of ``id_dataset``; near OOD = its other classes;
far OOD = ``far_dataset``. All images are normalized with the ID dataset's statistics (the
network's own preprocessing).

Protocol (the authors' ``pretrain_vgg_nc.py``): AdamW (lr, weight decay), a linear warm-up from
0.01 x lr over ``warmup_epochs`` then a cosine decay to 0, stepped once per epoch; cross entropy
with label smoothing + ``alpha`` x entropy regularizer. No augmentation here (see the chapter).

After training, :func:`analyze` measures every layer of :meth:`OODNet.layer_modules` (the authors'
layers: conv outputs before normalization, the last one, ``encoder``, pooled to 1 x 1): collapse
metrics of the ID training features (streamed through hooks; NC2-NC4 against the ID probe's
classifier, as the authors' ``nc_eval``), an ID linear probe whose energy scores detect near and far
OOD test images (AUROC, FPR95; the authors' AdamW probe, :func:`ncutils.ood.adamw_probe`), and
transfer probes (scikit-learn logistic regression) trained on the near-OOD classes and on the far
dataset (accuracy on their test images).
"""

from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F

from .ood import (DETECTION_PROBE, adamw_probe, detection_metrics, energy_score, extract_layer_features,
                  layer_class_stats, linear_probe)
from .ood_model import build_ood_model, entropy_regularizer

__all__ = ["ood_splits", "train_ood", "analyze", "run_nc_ood", "arm_label", "LAYER_COLUMNS",
           "HISTORY_COLUMNS"]

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "ce_loss", "entropy_term", "train_acc", "epoch_seconds")
LAYER_COLUMNS = ("layer", "depth", "dim", "nc1", "nc1_trace_ratio", "cdnv", "equinorm_means",
                 "equiangular_means", "maxangle_means", "self_duality", "ncc_mismatch", "id_probe_acc",
                 "auroc_near", "fpr95_near", "auroc_far", "fpr95_far", "transfer_near", "transfer_far",
                 "probes_converged")
_REQUIRED = ("id_dataset", "id_classes", "far_dataset", "arch", "width", "n_per_class", "test_per_class",
             "probe_train_per_class", "probe_test_per_class", "epochs", "warmup_epochs", "batch_size", "lr",
             "weight_decay", "label_smoothing", "alpha", "projector", "hidden_mult", "probe_C",
             "probe_max_iter", "seed")


def _check_config(cfg: dict) -> None:
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"nc_ood run config is missing {missing}")
    for key in ("epochs", "batch_size", "hidden_mult", "probe_max_iter", "width"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"config[{key!r}] must be a positive integer, got {v!r}")
    if isinstance(cfg["warmup_epochs"], bool) or not isinstance(cfg["warmup_epochs"], int) \
            or not 0 <= cfg["warmup_epochs"] < cfg["epochs"]:
        raise ValueError(f"config['warmup_epochs'] must be an integer in [0, epochs), got {cfg['warmup_epochs']!r}")
    for key in ("lr", "probe_C"):
        if not (isinstance(cfg[key], (int, float)) and cfg[key] > 0):
            raise ValueError(f"config[{key!r}] must be a positive number, got {cfg[key]!r}")
    for key in ("weight_decay", "alpha"):
        if not (isinstance(cfg[key], (int, float)) and cfg[key] >= 0):
            raise ValueError(f"config[{key!r}] must be a number >= 0, got {cfg[key]!r}")
    if not (isinstance(cfg["label_smoothing"], (int, float)) and 0 <= cfg["label_smoothing"] < 1):
        raise ValueError(f"config['label_smoothing'] must be in [0, 1), got {cfg['label_smoothing']!r}")
    if not isinstance(cfg["projector"], bool):
        raise ValueError(f"config['projector'] must be True or False, got {cfg['projector']!r}")
    ids = cfg["id_classes"]
    if not isinstance(ids, (list, tuple)) or len(ids) < 2 or len(set(ids)) != len(ids) \
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in ids):
        raise ValueError(f"config['id_classes'] must be >= 2 distinct class indices, got {ids!r}")
    if cfg["id_dataset"] == cfg["far_dataset"]:
        raise ValueError(f"config['far_dataset'] must differ from id_dataset, got {cfg['far_dataset']!r} twice")


def _subset(dataset: str, split: str, classes, n_per_class, seed: int, norm_dataset: str):
    """Images of ``classes`` (None: all) of ``dataset``, ``n_per_class`` each (None: all), labels
    renumbered 0..len(classes)-1 in the order given, normalized with ``norm_dataset``'s statistics."""
    from . import data

    images, labels = data.load_dataset(dataset, split)
    if classes is None:
        classes = sorted(set(labels.tolist()))
    missing = [c for c in classes if not bool((labels == c).any())]
    if missing:
        raise ValueError(f"{dataset} {split} has no class {missing}")
    mask = torch.isin(labels, torch.tensor(list(classes)))
    images, labels = images[mask], labels[mask]
    remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(list(classes))] = torch.arange(len(classes))
    labels = remap[labels]
    idx = data.balanced_subset(labels, n_per_class, seed)
    return data.to_float(images[idx], norm_dataset), labels[idx]


def ood_splits(cfg: dict) -> dict:
    """``{name: (x, y)}`` for id_train / id_test, near_train / near_test, far_train / far_test."""
    from . import data

    name = cfg["id_dataset"]
    k_all = data.DATASETS[data.canonical_name(name)].num_classes
    bad = [c for c in cfg["id_classes"] if c >= k_all]
    if bad:
        raise ValueError(f"config['id_classes'] has classes {bad} that {name} (K = {k_all}) does not have")
    near = [c for c in range(k_all) if c not in cfg["id_classes"]]
    if len(near) < 2:
        raise ValueError("config['id_classes'] must leave at least 2 classes of id_dataset as near OOD")
    s, far = cfg["seed"], cfg["far_dataset"]
    return {
        "id_train": _subset(name, "train", cfg["id_classes"], cfg["n_per_class"], s, name),
        "id_test": _subset(name, "test", cfg["id_classes"], cfg["test_per_class"], s, name),
        "near_train": _subset(name, "train", near, cfg["probe_train_per_class"], s, name),
        "near_test": _subset(name, "test", near, cfg["probe_test_per_class"], s, name),
        "far_train": _subset(far, "train", None, cfg["probe_train_per_class"], s, name),
        "far_test": _subset(far, "test", None, cfg["probe_test_per_class"], s, name),
    }


def _scheduler(opt, cfg):
    warm, total = cfg["warmup_epochs"], cfg["epochs"]
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm, eta_min=0.0)
    if warm == 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=warm)
    return torch.optim.lr_scheduler.SequentialLR(opt, schedulers=[linear, cosine], milestones=[warm])


@torch.no_grad()
def _logits(model, x, device, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[s:s + batch_size].to(device)).float().cpu() for s in range(0, len(x), batch_size)])


def analyze(model, splits: dict, cfg: dict, device=None) -> tuple[list, dict]:
    """Per-layer rows (:data:`LAYER_COLUMNS`) and the network head's own numbers."""
    from .metrics import metrics_from_stats, ncc_mismatch_count

    device = next(model.parameters()).device if device is None else torch.device(device)
    modules, sides = model.layer_modules(), model.layer_pool_sides()
    x_tr, y_tr = splits["id_train"]
    k = len(cfg["id_classes"])
    stats = layer_class_stats(model, modules, x_tr, y_tr, k, pool_sides=sides)
    feats = {name: extract_layer_features(model, modules, xy[0], pool_sides=sides) for name, xy in splits.items()}
    labels = {name: xy[1].numpy() for name, xy in splits.items()}
    probe = dict(C=float(cfg["probe_C"]), max_iter=cfg["probe_max_iter"], seed=cfg["seed"])
    rows = []
    for depth, layer in enumerate(modules, start=1):
        f = {name: feats[name][layer] for name in feats}
        # the ID probe whose energy scores detect OOD: the authors' (they L2-normalize the
        # projector's output, projection_head.2, in the probe; NC is measured on the raw features)
        p = adamw_probe(f["id_train"], labels["id_train"], f["id_test"], labels["id_test"],
                        extra_features={"near": f["near_test"], "far": f["far_test"]},
                        normalize=layer == "projector", seed=cfg["seed"], **DETECTION_PROBE)
        s_id = energy_score(p["test_logits"])
        near = detection_metrics(s_id, energy_score(p["logits"]["near"]))
        far = detection_metrics(s_id, energy_score(p["logits"]["far"]))
        st = stats[layer]
        w, b = torch.as_tensor(p["weight"]), torch.as_tensor(p["bias"])
        wrong = ncc_mismatch_count(f["id_train"], st.means.cpu(), w, b)
        nc = metrics_from_stats(st, w, b, ncc_mismatch=wrong / len(y_tr), extras=True)
        t_near = linear_probe(f["near_train"], labels["near_train"], f["near_test"], labels["near_test"], **probe)
        t_far = linear_probe(f["far_train"], labels["far_train"], f["far_test"], labels["far_test"], **probe)
        rows.append({"layer": layer, "depth": depth, "dim": int(f["id_train"].shape[1]),
                     **{c: nc[c] for c in LAYER_COLUMNS if c in nc},
                     "id_probe_acc": p["accuracy"], "auroc_near": near["auroc"], "fpr95_near": near["fpr95"],
                     "auroc_far": far["auroc"], "fpr95_far": far["fpr95"],
                     "transfer_near": t_near["accuracy"], "transfer_far": t_far["accuracy"],
                     "probes_converged": bool(p["converged"] and t_near["converged"] and t_far["converged"])})
    logits = {name: _logits(model, splits[name][0], device) for name in ("id_test", "near_test", "far_test")}
    s_id = energy_score(logits["id_test"])
    head_near = detection_metrics(s_id, energy_score(logits["near_test"]))
    head_far = detection_metrics(s_id, energy_score(logits["far_test"]))
    head = {"test_acc": float((logits["id_test"].argmax(1).numpy() == labels["id_test"]).mean()),
            "head_auroc_near": head_near["auroc"], "head_fpr95_near": head_near["fpr95"],
            "head_auroc_far": head_far["auroc"], "head_fpr95_far": head_far["fpr95"]}
    return rows, head


def train_ood(run, cfg: dict, device=None, progress: bool | None = None, stop_after: int | None = None) -> dict:
    """Train one arm into ``run`` (table ``history``, atomic per-epoch checkpoint, resumable),
    then :func:`analyze` it (table ``layers``) and return the summary."""
    from .train import TensorBatches, resume_checkpoint, save_checkpoint

    _check_config(cfg)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if progress is None:
        progress = os.environ.get("NCUTILS_PROGRESS", "1") != "0"
    splits = ood_splits(cfg)
    x, y = splits["id_train"]
    k = len(cfg["id_classes"])
    model = build_ood_model(cfg["arch"], k, width=cfg["width"], projector=cfg["projector"],
                            hidden_mult=cfg["hidden_mult"], seed=cfg["seed"],
                            in_channels=x.shape[1], input_size=x.shape[-1]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = _scheduler(opt, cfg)
    history, start, wall = [], 1, 0.0
    state = resume_checkpoint(run, device, model, opt)
    if state is not None:
        sched.load_state_dict(state["scheduler"])
        history, start, wall = state["history"], state["epoch"] + 1, state["wall_seconds"]
    batches = TensorBatches(x.to(device), y.to(device), batch_size=cfg["batch_size"], seed=cfg["seed"])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg["epochs"], initial=start - 1, desc=run.label or "nc_ood", unit="ep")
    alpha, done_here = float(cfg["alpha"]), 0
    for epoch in range(start, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        model.train()
        lr = opt.param_groups[0]["lr"]
        sums, n_seen = {"loss": 0.0, "ce": 0.0, "reg": 0.0, "correct": 0}, 0
        for xb, yb in batches.epoch(epoch):
            if len(yb) < 2:  # BatchNorm and the nearest-neighbour term need two samples
                continue
            h, _, logits = model.embed(xb)
            ce = F.cross_entropy(logits, yb, label_smoothing=float(cfg["label_smoothing"]))
            if alpha > 0:
                reg = entropy_regularizer(h)
                loss = ce + alpha * reg
            else:
                with torch.no_grad():
                    reg = entropy_regularizer(h.detach())
                loss = ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = len(yb)
            sums["loss"] += float(loss.detach()) * b
            sums["ce"] += float(ce.detach()) * b
            sums["reg"] += float(reg.detach()) * b
            sums["correct"] += int((logits.detach().argmax(1) == yb).sum())
            n_seen += b
        sched.step()
        if not math.isfinite(sums["loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch}; lower config['lr'] = {cfg['lr']}")
        wall += time.perf_counter() - t0
        history.append({"epoch": epoch, "lr": lr, "train_loss": sums["loss"] / n_seen, "ce_loss": sums["ce"] / n_seen,
                        "entropy_term": sums["reg"] / n_seen, "train_acc": sums["correct"] / n_seen,
                        "epoch_seconds": time.perf_counter() - t0})
        save_checkpoint(run.path / "checkpoint.pt", {
            "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "history": history, "wall_seconds": wall, "config_hash": run.key})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3g}", acc=f"{history[-1]['train_acc']:.3g}")
        done_here += 1
        if stop_after is not None and done_here >= stop_after and epoch < cfg["epochs"]:
            break
    if bar is not None:
        bar.close()
    run.save_table("history", history)
    if history[-1]["epoch"] < cfg["epochs"]:
        return {"complete": False, "epochs_done": history[-1]["epoch"]}
    t0 = time.perf_counter()
    rows, head = analyze(model, splits, cfg, device)
    run.save_table("layers", [{c: r.get(c, math.nan) for c in LAYER_COLUMNS} for r in rows])
    wall += time.perf_counter() - t0
    by = {r["layer"]: r for r in rows}
    det = by["projector"] if "projector" in by else by["encoder"]
    return {"complete": True, "epochs_done": history[-1]["epoch"], "wall_seconds": wall,
            "analysis_seconds": time.perf_counter() - t0, **head,
            "train_acc_end": history[-1]["train_acc"], "nc1_encoder": by["encoder"]["nc1"],
            "nc1_projector": by["projector"]["nc1"] if "projector" in by else math.nan,
            "nc1_projector_normalized": by["projector_normalized"]["nc1"] if "projector" in by else math.nan,
            "nc1_embedding": by["embedding"]["nc1"],
            "detection_layer": det["layer"], "auroc_near": det["auroc_near"], "auroc_far": det["auroc_far"],
            "fpr95_near": det["fpr95_near"], "fpr95_far": det["fpr95_far"],
            "transfer_near": by["encoder"]["transfer_near"], "transfer_far": by["encoder"]["transfer_far"],
            "steps_per_epoch": math.ceil(len(y) / cfg["batch_size"]), "train_samples": len(y),
            "trainable_parameters": sum(p.numel() for p in params)}


def arm_label(arm: dict, seed: int) -> str:
    return f"{arm['name']}-s{seed}"


def run_nc_ood(preset: str, force: bool = False, device=None, progress: bool | None = None,
               only=None, seeds=None) -> dict:
    """Load or train every arm x seed of the ``nc_ood`` experiment: ``{(arm name, seed): Run}``.
    ``only`` restricts to arm names, ``seeds`` to seeds (default: the preset's)."""
    from . import config as _config
    from .store import load_or_run

    exp = _config.get_preset("nc_ood", preset)
    arms, all_seeds = exp.pop("arms"), exp.pop("seeds")
    names = [a["name"] for a in arms]
    if only is not None:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ValueError(f"only={unknown!r} names no arm of nc_ood; choose from {names}")
    runs = {}
    for seed in (all_seeds if seeds is None else seeds):
        for arm in arms:
            if only is not None and arm["name"] not in only:
                continue
            cfg = {**exp, **{k: v for k, v in arm.items() if k != "name"}, "seed": seed}
            runs[(arm["name"], seed)] = load_or_run(
                "nc_ood", preset, cfg, lambda r, c=cfg: train_ood(r, c, device=device, progress=progress),
                label=arm_label(arm, seed), force=force, device=device)
    return runs
