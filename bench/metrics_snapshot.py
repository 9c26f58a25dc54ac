"""Time of one collapse-metrics snapshot of a full train set (60,000 x 512 features, 10 classes).

Ours: ``ncutils.metrics.collapse_metrics`` (one pass, float64 class statistics, Sigma_B from an SVD
of the d x K class-mean matrix) and ``collapse_metrics_streaming`` (batches of 1,024, the N x d
features never held at once). Reference: Papyan et al.'s ``analysis()`` (float32, two passes,
Sigma_W as a sum of per-sample outer products, NCC by a per-sample loop), in the notebook's
form (outer products materialised class by class per batch of 128) and as a plain per-sample
Python loop (``Sigma_W += outer(h_i - mu_c)``). The reference is slow on a CPU, so it is timed on a
subset (``--ref-samples``, default 2,000 on a CPU) and its two passes are extrapolated linearly to
60,000 samples; its closing computations (fixed cost) are added as measured.

Also: forward + metric, the whole snapshot a training run takes (ResNet18 over the 60,000
Fashion-MNIST train images, then the metrics). On a GPU it is measured with the library's own code
(``train._evaluate`` + ``train._nc_snapshot``); on a CPU the forward pass is timed on 256 images and
extrapolated. The reference runs the network twice (once per pass); ours once.

    python bench/metrics_snapshot.py                 # CPU, about a minute
    python bench/metrics_snapshot.py --device cuda   # GPU: all at full size
"""

from __future__ import annotations

import _common as C
import torch

from ncutils import data, metrics, train

N, D, K = 60_000, 512, 10
SHARED_KEYS = ("nc1", "equinorm_means", "equinorm_classifiers", "maxangle_means",
               "maxangle_classifiers", "self_duality", "ncc_mismatch")


def stream_source(h, y, batch_size=1024):
    def batches():
        for i in range(0, len(y), batch_size):
            yield h[i:i + batch_size], y[i:i + batch_size]
    return batches


def main() -> None:
    p = C.parser(__doc__)
    p.add_argument("--ref-samples", type=int, default=None,
                   help="samples the reference is timed on (CPU 2,000; GPU 60,000)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls of ours (CPU 2, GPU 10)")
    p.add_argument("--forward-samples", type=int, default=256,
                   help="CPU only: images the ResNet18 forward pass is timed on (then extrapolated)")
    args = p.parse_args()
    device = C.pick_device(args.device)
    gpu = device.type == "cuda"
    n_ref = min(N, args.ref_samples or (N if gpu else 2_000))
    repeats = args.repeats or (10 if gpu else 2)
    C.header("Collapse-metrics snapshot, 60,000 x 512 features, K = 10", device,
             **{"features": f"synthetic, float32, {N} x {D}, K = {K} balanced classes",
                "ours": f"collapse_metrics / collapse_metrics_streaming (float64), median of {repeats}",
                "reference": f"Papyan et al.'s analysis() (float32), timed on {n_ref} samples"
                             + (f", passes extrapolated x {N / n_ref:.4g}" if n_ref < N else "")})

    h, y, w, b = C.synthetic_features(N, D, K, device=device)
    ours = {
        "collapse_metrics (in memory)": lambda: metrics.collapse_metrics(h, y, w, b, extras=True),
        "collapse_metrics_streaming (1,024 per batch)":
            lambda: metrics.collapse_metrics_streaming(stream_source(h, y), w, b, extras=True),
    }
    t_ours, _ = C.interleaved(ours, device, {k: (2 if gpu else 0) for k in ours}, repeats)
    t_ours = {k: C.median(v) for k, v in t_ours.items()}

    sub = slice(0, n_ref)
    t_ref, agree = {}, {}
    mine = metrics.collapse_metrics(h[sub], y[sub], w, b)
    for name, loop in (("notebook (per-sample outer products, per class per batch)", False),
                       ("per-sample Python loop (Sigma_W += outer)", True)):
        timings = {}
        ref = C.reference_metrics(C.feature_batches_of(h[sub], y[sub]), w, b, K, per_sample_loop=loop,
                                  timings=timings)
        t_ref[name] = timings["passes"] * N / n_ref + timings["close"]
        agree[name] = max(C.rel_diff(ref[key], mine[key]) for key in SHARED_KEYS)
        print(f"reference, {name}: {timings['passes']:.3g} s for the two passes over {n_ref} samples"
              f" + {timings['close']:.3g} s closing"
              + (f" -> extrapolated to {N}: {timings['passes']:.3g} x {N}/{n_ref} + {timings['close']:.3g}"
                 f" = {t_ref[name]:.3g} s" if n_ref < N else f" = {t_ref[name]:.3g} s"))
        print(f"    same numbers as ours on those {n_ref} samples: max relative difference over "
              f"{len(SHARED_KEYS)} metrics = {agree[name]:.2g} (float32 reference vs float64 ours)")
    print()
    print("metric only, full train set (60,000 x 512):")
    for k, v in t_ours.items():
        print(f"  ours {k:>46}: {v:8.3g} s")
    for k, v in t_ref.items():
        print(f"  reference {k:>58}: {v:8.3g} s" + (" (extrapolated)" if n_ref < N else ""))
    best_ref = min(t_ref.values())
    for k, v in t_ours.items():
        for rk, rv in t_ref.items():
            print("  " + C.ratio_line(f"{k} vs reference {rk.split(' (')[0]}", v, rv, higher_is_better=False))
    for k, v in t_ours.items():
        if gpu:
            print(f"  target on a GPU: metric-only snapshot < 1 s -> ours {k}: {v:.3g} s: {C.verdict(v < 1.0)}")
        else:
            print(f"  target on this CPU: >= 10x faster than the fastest reference form -> ours {k}: "
                  f"{best_ref / v:.3g}x: {C.verdict(best_ref / v >= 10)}")
    del h, y
    print()
    forward_and_metric(device, args.forward_samples, t_ours["collapse_metrics (in memory)"], t_ref,
                       measure_full=gpu)


def forward_and_metric(device, forward_samples: int, metric_seconds: float, ref_metric: dict,
                       measure_full: bool) -> None:
    """ResNet18 forward over the 60,000 Fashion-MNIST train images + the metrics: measured in full
    (on a GPU), else the forward pass timed on ``forward_samples`` images and extrapolated."""
    gpu = device.type == "cuda"
    x, y = data.get_data("fashionmnist", "train")
    model, fmt = C.ours_model("resnet18", 1, 28, device)
    model.eval()
    if measure_full:
        x, y = x.to(device).contiguous(memory_format=fmt), y.to(device)

        def snapshot():
            _, _, stats, feats = train._evaluate(model, x, y, K, device, gpu, keep_features=True)
            return train._nc_snapshot(model, stats, feats)

        t, _ = C.interleaved({"snap": snapshot}, device, {"snap": 2}, 5)
        t_ours = C.median(t["snap"])
        print(f"forward + metric (ours, the library's snapshot: train._evaluate + train._nc_snapshot"
              f"{', bf16 autocast, channels_last' if gpu else ', float32'}): {t_ours:.3g} s "
              f"({C.spread(t['snap'])})")
        ref_model = C.reference_model("resnet18", 1, 28, device)
        images, labels, mean, std, _, _ = C.uint8_images("fashionmnist", len(y))
        loader = C.reference_loader(C.PILDataset(images, labels, mean, std), shuffle=False)
        w = ref_model.classifier.weight
        t_ref = C.clock(lambda: C.reference_metrics(C.network_batches_of(ref_model, loader, device), w,
                                                    ref_model.classifier.bias, K), device)
        print(f"forward + metric (reference: DataLoader(PIL), float32, two forward passes, analysis()): "
              f"{t_ref:.3g} s")
        print("  " + C.ratio_line("forward + metric", t_ours, t_ref, higher_is_better=False))
        print(f"  target on a GPU: full-train-set snapshot incl. forward < 1 s -> {t_ours:.3g} s: "
              f"{C.verdict(t_ours < 1.0)}")
        return
    xs = x[:forward_samples]

    @torch.no_grad()
    def forward():
        for i in range(0, len(xs), 128):
            model.logits_and_features(xs[i:i + 128])

    forward()  # warm-up
    t_fwd = C.clock(forward, device)
    fwd_full = t_fwd * N / forward_samples
    ours_total = fwd_full + metric_seconds
    print(f"forward + metric, CPU estimate: ResNet18 forward (float32) on {forward_samples} images "
          f"{t_fwd:.3g} s -> x {N}/{forward_samples} = {fwd_full:.4g} s for the train set")
    print(f"  ours      = 1 forward pass + metric = {fwd_full:.4g} + {metric_seconds:.3g} = {ours_total:.4g} s")
    best_ref = min(ref_metric.values())
    ref_total = 2 * fwd_full + best_ref
    print(f"  reference = 2 forward passes + metric = 2 x {fwd_full:.4g} + {best_ref:.3g} = {ref_total:.4g} s "
          f"(its PIL input pipeline not counted)")
    print("  " + C.ratio_line("forward + metric (estimate)", ours_total, ref_total, higher_is_better=False))


if __name__ == "__main__":
    main()
