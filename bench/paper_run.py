"""Wall time of one full ``paper``-preset chapter-1 run (ResNet18, Fashion-MNIST, 350 epochs),
extrapolated from a few measured epochs: ours vs the reference way.

Ours is the library itself: ``ncutils.train.train`` on the paper run config, stopped after
``--epochs`` epochs (CPU: 2 epochs on a 60 + 10 image subset of the same 6 : 1 train/test ratio;
GPU: 3 epochs of the full 60,000 + 10,000 images). Epoch 1 carries the warm-up (and
torch.compile, cudnn autotuning) and is left out. The run config asks for snapshots at epochs 1
and 350 only, so the later measured epochs are plain epochs; the cost of one snapshot (the
library's feature pass + metrics: ``train._evaluate`` + ``train._nc_snapshot``) is timed on its own.
The reference way does the same protocol (train, train and test error every epoch, NC snapshot at
the same epochs) with a DataLoader over a PIL dataset, float32, and Papyan et al.'s ``analysis()``
(two forward passes) for each snapshot. Both are extrapolated with

    T = (N_full / n_measured) x (epochs x t_epoch + snapshots x t_snapshot)

where snapshots = the paper preset's log-spaced snapshot epochs + 1 for the onset of the terminal
phase (an upper bound).

    python bench/paper_run.py                            # CPU, about two minutes
    python bench/paper_run.py --device cuda [--compile]  # GPU
"""

from __future__ import annotations

import math
import tempfile

import _common as C
import torch

from ncutils import config, train
from ncutils.store import Run

FULL_TRAIN, FULL_TEST = 60_000, 10_000
TARGET_GPU_SECONDS = 600  # paper-preset ResNet18 Fashion-MNIST on one H100 in <= 10 min


def paper_config(**overrides) -> dict:
    exp = config.get_preset("terminal_phase", "paper")
    return train.run_config(exp, "fashionmnist", "resnet18", seed=0, **overrides)


def measure_ours(cfg: dict, device, epochs: int) -> tuple[float, float, int, int]:
    """(seconds of a plain epoch, seconds of one snapshot, train size, test size) of the library."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Run("terminal_phase", "paper", cfg, label="bench", root=tmp)
        summary = train.train(run, cfg, device=device, progress=False, stop_after=epochs)
        hist = run.table("history")
    plain = hist[(hist["epoch"] > 1) & hist["nc1"].isna()]["epoch_seconds"]
    if len(plain) == 0:
        raise SystemExit("every measured epoch after the first took a snapshot (train error hit 0?); "
                         "measure more epochs or a larger subset")
    print(f"  ours: epochs {list(hist['epoch'])} took {[round(s, 3) for s in hist['epoch_seconds']]} s; "
          f"plain epochs used: {len(plain)}")
    model, x, y, _, _, k = train._prepare(cfg, device)
    amp = cfg.get("amp", "auto") in (True, "auto") and device.type == "cuda"

    def snapshot():
        _, _, stats, feats = train._evaluate(model, x, y, k, device, amp, keep_features=True)
        return train._nc_snapshot(model, stats, feats)

    if device.type == "cuda":
        snapshot()  # warm-up (cudnn autotuning, allocator)
    t_snap = C.clock(snapshot, device)
    return float(plain.mean()), t_snap, summary["train_samples"], summary["test_samples"]


def measure_reference(cfg: dict, device, epochs: int) -> tuple[float, float]:
    """(seconds of a plain epoch, seconds of one snapshot) the reference way, same data and model."""
    from ncutils import data

    idx = {}
    for split, n in (("train", cfg["n_per_class"]), ("test", cfg["test_per_class"])):
        images, labels = data.load_dataset("fashionmnist", split)
        keep = data.balanced_subset(labels, n, cfg["seed"]) if n is not None else torch.arange(len(labels))
        idx[split] = (images[keep], labels[keep])
    info = data.DATASETS["fashionmnist"]
    ds = {s: C.PILDataset(*idx[s], (info.mean,), (info.std,)) for s in idx}
    train_loader = C.reference_loader(ds["train"], cfg["batch_size"], shuffle=True)
    eval_loaders = [C.reference_loader(ds[s], cfg["batch_size"], shuffle=False) for s in ds]
    model = C.reference_model("resnet18", 1, 28, device, seed=cfg["seed"], width=cfg["width"])
    opt = C.sgd(model, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])

    def epoch():
        model.train()
        for xb, yb in train_loader:
            C.reference_step(model, opt, xb, yb, device)
        for loader in eval_loaders:
            C.reference_error(model, loader, device)

    times = [C.clock(epoch, device) for _ in range(epochs)]
    print(f"  reference: epochs took {[round(t, 3) for t in times]} s")
    t_snap = C.clock(lambda: C.reference_metrics(
        C.network_batches_of(model, eval_loaders[0], device), model.classifier.weight,
        model.classifier.bias, 10), device)
    return sum(times[1:]) / len(times[1:]), t_snap


def main() -> None:
    p = C.parser(__doc__)
    p.add_argument("--epochs", type=int, default=None, help="measured epochs of ours (CPU 2, GPU 3)")
    p.add_argument("--baseline-epochs", type=int, default=2, help="measured epochs of the reference (2)")
    p.add_argument("--per-class", type=int, default=None,
                   help="train images per class measured (CPU 6; GPU: all 6,000); test gets 1/6")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward (GPU)")
    p.add_argument("--skip-baseline", action="store_true")
    args = p.parse_args()
    device = C.pick_device(args.device)
    gpu = device.type == "cuda"
    epochs_measured = args.epochs or (3 if gpu else 2)
    if min(epochs_measured, args.baseline_epochs) < 2:
        raise SystemExit("--epochs and --baseline-epochs must be >= 2 (epoch 1 is the warm-up)")
    per_class = args.per_class if args.per_class is not None else (None if gpu else 6)
    full = paper_config()
    snapshots = len(config.snapshot_epochs(full["epochs"], full["n_snapshots"])) + 1
    overrides = dict(n_snapshots=2)  # snapshots at epochs 1 and 350: the later measured epochs are plain
    if per_class is not None:
        overrides.update(n_per_class=per_class, test_per_class=max(1, round(per_class / 6)))
    if args.compile:
        overrides["compile"] = True
    cfg = paper_config(**overrides)
    C.header("Paper-preset chapter-1 run: ResNet18, Fashion-MNIST, extrapolated", device,
             batch_size=cfg["batch_size"],
             **{"paper run": f"{full['epochs']} epochs, lr {full['lr']:.4g}, {snapshots - 1} log-spaced "
                             f"snapshots (+1 at the TPT onset), {FULL_TRAIN} train + {FULL_TEST} test images",
                "measured on": ("full data" if per_class is None else
                                f"{per_class} train + {cfg['test_per_class']} test images per class"),
                "ours": "ncutils.train.train" + (" (bf16 autocast, channels_last" if gpu else " (float32")
                        + (", torch.compile)" if args.compile and gpu else ")")})
    t_ep, t_snap, n_train, n_test = measure_ours(cfg, device, epochs_measured)
    scale = FULL_TRAIN / n_train
    if not math.isclose((FULL_TRAIN + FULL_TEST) / (n_train + n_test), scale, rel_tol=0.05):
        print(f"  note: the measured train/test ratio {n_train}:{n_test} differs from 6:1")
    total_ours = scale * (full["epochs"] * t_ep + snapshots * t_snap)
    print(f"  ours: T = ({FULL_TRAIN}/{n_train}) x ({full['epochs']} x {t_ep:.4g} s + {snapshots} x {t_snap:.4g} s)"
          f" = {total_ours:.4g} s = {total_ours / 3600:.3g} h")
    if args.skip_baseline:
        return
    r_ep, r_snap = measure_reference(cfg, device, args.baseline_epochs)
    total_ref = scale * (full["epochs"] * r_ep + snapshots * r_snap)
    print(f"  reference: T = ({FULL_TRAIN}/{n_train}) x ({full['epochs']} x {r_ep:.4g} s + {snapshots} x "
          f"{r_snap:.4g} s) = {total_ref:.4g} s = {total_ref / 3600:.3g} h")
    print("  " + C.ratio_line("paper-run wall time", total_ours, total_ref, higher_is_better=False))
    if gpu:
        print(f"  target on one H100: <= {TARGET_GPU_SECONDS / 60:.0f} min -> {total_ours / 60:.3g} min: "
              f"{C.verdict(total_ours <= TARGET_GPU_SECONDS)} (device: {C.device_name(device)})")


if __name__ == "__main__":
    main()
