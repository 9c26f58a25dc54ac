"""Does the fast path give the numbers of the plain float32 path? Short runs, figures printed.

CPU (always): ``ncutils.train.train`` (TensorBatches, float64 class statistics) against a plain
loop written the reference way: a ``DataLoader`` fed the same per-epoch permutation, float32,
train/test error by a DataLoader pass, Papyan et al.'s ``analysis()`` (float32, two passes) for the
collapse metrics. Stated tolerance: the weights and the train/test errors are identical (bitwise:
same batches, same arithmetic; errors as stored, to 9 digits); the collapse metrics differ only by the float32 accumulation of
the reference: relative difference <= 1e-3, NCC mismatch within 1/N.

GPU (when CUDA is present): the library's fast path (bf16 autocast + channels_last) against
plain float32 (``amp=False``, TF32 switched off), same seed, ResNet18 on a Fashion-MNIST subset for
a few epochs. Training in bf16 follows another trajectory, so the tolerance is statistical: every
|bf16 - fp32| difference of train error, test error and NC metrics must be <= 2 x the difference
between two fp32 runs with different seeds (or an absolute floor: 0.01 for errors, 10 % for
metrics). Also, with the same weights, features in bf16 vs fp32 give metrics within 5 % (NCC
mismatch within 0.01).

    python bench/fastpath_agreement.py                # CPU part, about 10 s
    python bench/fastpath_agreement.py --device cuda  # both parts
"""

from __future__ import annotations

import math
import tempfile

import _common as C
import torch

from ncutils import config, train
from ncutils.metrics import METRIC_KEYS
from ncutils.store import Run

SHARED_KEYS = ("nc1", "equinorm_means", "equinorm_classifiers", "maxangle_means",
               "maxangle_classifiers", "self_duality", "ncc_mismatch")


def train_lib(cfg, device):
    """History and final weights of ``ncutils.train.train`` on ``cfg``."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Run("terminal_phase", "smoke", cfg, root=tmp)
        train.train(run, cfg, device=device, progress=False)
        hist = run.table("history")
        state = train.load_checkpoint(run.path / "checkpoint.pt")["model"]
    return hist, state


def reference_run(cfg, device):
    """The same protocol the plain way: DataLoader with the same order, float32 everywhere."""
    model, x, y, xt, yt, k = train._prepare(cfg, device)  # the same initial weights and data
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    milestones = [int(f * cfg["epochs"]) if isinstance(f, float) else int(f) for f in cfg["lr_milestones"]]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg["lr_gamma"])
    batches = train.TensorBatches(x, y, batch_size=cfg["batch_size"], seed=cfg["seed"])
    dataset = torch.utils.data.TensorDataset(x, y)
    plain = lambda xs, ys: torch.utils.data.DataLoader(  # noqa: E731
        torch.utils.data.TensorDataset(xs, ys), batch_size=1024, shuffle=False)
    snaps = set(config.snapshot_epochs(cfg["epochs"], cfg["n_snapshots"]))
    rows = []
    for epoch in range(1, cfg["epochs"] + 1):
        model.train()
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"],
                                             sampler=C.EpochOrder(batches.order(epoch)))
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        row = {"epoch": epoch, "train_error": C.reference_error(model, plain(x, y), device),
               "test_error": C.reference_error(model, plain(xt, yt), device)}
        if epoch in snaps:
            row.update(C.reference_metrics(C.network_batches_of(model, plain(x, y), device),
                                           model.classifier.weight, model.classifier.bias, k))
        rows.append(row)
    return rows, model.state_dict(), len(y)


def cpu_part() -> bool:
    device = torch.device("cpu")
    exp = config.get_preset("terminal_phase", "smoke")
    cfg = train.run_config(exp, "mnist", "mlp", seed=1, n_per_class=30, test_per_class=10, epochs=3,
                           width=64, n_snapshots=3)
    print(f"== CPU: ncutils.train.train vs a DataLoader loop in float32, same order "
          f"({cfg['arch']} width {cfg['width']}, {cfg['dataset']} {cfg['n_per_class']}/class, "
          f"{cfg['epochs']} epochs, batch {cfg['batch_size']})")
    hist, ours_state = train_lib(cfg, device)
    rows, ref_state, n = reference_run(cfg, device)
    max_w = max(float((ours_state[key].double() - ref_state[key].double()).abs().max()) for key in ours_state)
    err_diff = max(max(abs(r[c] - hist.loc[hist["epoch"] == r["epoch"], c].item())
                       for c in ("train_error", "test_error")) for r in rows)
    metric_diff, ncc_diff = 0.0, 0.0
    for r in rows:
        if "nc1" not in r:
            continue
        ours = hist.loc[hist["epoch"] == r["epoch"]].iloc[0]
        metric_diff = max([metric_diff] + [C.rel_diff(r[key], float(ours[key]))
                                           for key in SHARED_KEYS if key != "ncc_mismatch"])
        ncc_diff = max(ncc_diff, abs(r["ncc_mismatch"] - float(ours["ncc_mismatch"])))
    print(f"  max |weight difference| after {cfg['epochs']} epochs: {max_w:.3g}   (tolerance: 0, bitwise)")
    print(f"  max |train/test error difference| over epochs:  {err_diff:.3g}   (tolerance: 1e-8, the "
          f"9 significant digits the history table keeps)")
    print(f"  max relative difference of {len(SHARED_KEYS) - 1} NC metrics, float32 reference vs "
          f"float64 ours: {metric_diff:.3g}   (tolerance: 1e-3)")
    print(f"  max |NCC mismatch difference|: {ncc_diff:.3g}   (tolerance: 1/N = {1 / n:.3g})")
    ok = max_w == 0.0 and err_diff <= 1e-8 and metric_diff <= 1e-3 and ncc_diff <= 1 / n + 1e-8
    print(f"  CPU agreement: {'PASS' if ok else 'FAIL'}\n")
    return ok


def _set_tf32(enabled: bool) -> None:
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def gpu_part(device, per_class: int, epochs: int) -> bool:
    exp = config.get_preset("terminal_phase", "paper")

    def cfg_for(seed, amp):
        return train.run_config(exp, "fashionmnist", "resnet18", seed=seed, n_per_class=per_class,
                                test_per_class=max(1, per_class // 5), epochs=epochs, n_snapshots=2,
                                amp=amp)

    print(f"== GPU: bf16 autocast + channels_last vs float32 (TF32 off), ResNet18, Fashion-MNIST "
          f"{per_class}/class, {epochs} epochs")
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        _set_tf32(False)
        fp32_a, _ = train_lib(cfg_for(0, False), device)
        fp32_b, _ = train_lib(cfg_for(1, False), device)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    bf16, bf16_state = train_lib(cfg_for(0, True), device)
    last = lambda h: h.iloc[-1]  # noqa: E731
    ok = True
    for key in ("train_error", "test_error") + METRIC_KEYS:
        a, b, s = float(last(bf16)[key]), float(last(fp32_a)[key]), float(last(fp32_b)[key])
        if math.isnan(a) and math.isnan(b):
            continue
        is_error = key.endswith("_error") or key == "ncc_mismatch"
        diff = abs(a - b) if is_error else C.rel_diff(a, b)
        seed_diff = abs(s - b) if is_error else C.rel_diff(s, b)
        tol = max(2 * seed_diff, 0.01 if is_error else 0.10)
        ok &= diff <= tol
        print(f"  {key:>24}: bf16 {a:.4g}  fp32 {b:.4g}  |diff| {diff:.3g}  "
              f"(fp32 seed-to-seed {seed_diff:.3g}; tolerance {tol:.3g}) {'ok' if diff <= tol else 'FAIL'}")

    # Same weights, features under bf16 autocast vs float32: the metric path alone.
    model, x, y, _, _, k = train._prepare(cfg_for(0, True), device)
    model.load_state_dict(bf16_state)
    got = {}
    for amp in (True, False):
        _, _, stats, feats = train._evaluate(model, x, y, k, device, amp, keep_features=True)
        got[amp] = train._nc_snapshot(model, stats, feats)
    for key in METRIC_KEYS:
        a, b = got[True][key], got[False][key]
        diff = abs(a - b) if key == "ncc_mismatch" else C.rel_diff(a, b)
        tol = 0.01 if key == "ncc_mismatch" else 0.05
        ok &= diff <= tol
        print(f"  same weights, {key:>22}: bf16 features {a:.4g}  fp32 features {b:.4g}  "
              f"diff {diff:.3g} (tolerance {tol}) {'ok' if diff <= tol else 'FAIL'}")
    print(f"  GPU agreement: {'PASS' if ok else 'FAIL'}\n")
    return ok


def main() -> None:
    p = C.parser(__doc__)
    p.add_argument("--per-class", type=int, default=500, help="GPU part: train images per class (500)")
    p.add_argument("--epochs", type=int, default=5, help="GPU part: epochs (5)")
    args = p.parse_args()
    device = C.pick_device(args.device)
    C.header("Fast path vs plain float32 path: agreement on short runs", device, batch_size=C.BATCH_SIZE)
    ok = cpu_part()
    if device.type == "cuda":
        ok &= gpu_part(device, args.per_class, args.epochs)
    else:
        print("GPU part: not run (no CUDA device)")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
