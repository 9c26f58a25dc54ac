"""Training throughput (images/s) of ResNet18 at batch 128: ours vs the reference way.

Ours: the dataset as one float32 tensor on the device, ``TensorBatches`` (seeded on-device
shuffling and indexing), on a GPU channels_last + bf16 autocast (``--compile`` adds torch.compile),
the step of ``ncutils.train``. Baseline: the reference notebook's way: ``DataLoader`` over a
torchvision-style dataset (PIL decode + ToTensor + Normalize per sample), float32, contiguous,
host-to-device copy and ``.item()`` each step. Both in this process, steps interleaved.

Inputs: 28 px, 1 channel (the Fashion-MNIST train set) and 32 px, 3 channels (random CIFAR-10-sized
images). It also times the input pipelines alone (no model), to show where the time goes.

    python bench/train_throughput.py                 # CPU: 1 warm-up + 1 timed step per way
    python bench/train_throughput.py --device cuda   # GPU: 10 warm-up + 50 timed steps per way
"""

from __future__ import annotations

import _common as C
import torch

from ncutils import train

CASES = (("28 px, 1 channel (Fashion-MNIST)", "fashionmnist"),
         ("32 px, 3 channels (CIFAR-10-sized)", "synthetic32"))


def loader_only(pipelines: dict, device, batches: int) -> dict:
    """images/s of each input pipeline alone: draw batches and put them on the device."""
    out = {}
    for name, it in pipelines.items():
        def draw(it=it):
            for _ in range(batches):
                xb, yb = next(it)
                xb.to(device, non_blocking=False), yb.to(device)
        next(it)  # create the iterator, touch the data once
        out[name] = batches * C.BATCH_SIZE / C.clock(draw, device)
    return out


def main() -> None:
    p = C.parser(__doc__)
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per way (GPU 10; CPU 1, taken by ours only: on a CPU both ways "
                        "run the same float32 kernels on the same shapes, so one warm-up serves both)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per way (CPU 1: a ResNet18 step takes ~10 s there; GPU 50)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline (0)")
    p.add_argument("--compile", action="store_true", help="torch.compile our model (GPU)")
    p.add_argument("--only", choices=[c[1] for c in CASES], default=None)
    args = p.parse_args()
    device = C.pick_device(args.device)
    gpu = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    steps = args.steps if args.steps is not None else (50 if gpu else 1)
    n_cpu_synthetic = 2048  # on a CPU only a few batches are drawn; keep the synthetic set small
    C.header("Training throughput, ResNet18 (ours vs reference-style DataLoader)", device,
             **{"ours": "TensorBatches" + (" + channels_last + bf16 autocast" if gpu else ", float32")
                + (" + torch.compile" if args.compile and gpu else ""),
                "baseline": f"DataLoader(PIL dataset, workers={args.workers}), float32",
                "timed steps": f"{steps} per way, interleaved, after {warmup} warm-up step(s)"
                                + ("" if gpu else " of ours (shared kernels)")})
    summary = []
    for title, name in CASES:
        if args.only and name != args.only:
            continue
        images, labels, mean, std, ch, size = C.uint8_images(
            name, None if (gpu or name == "fashionmnist") else n_cpu_synthetic)
        x_host = C.as_float(images, mean, std)
        model_o, fmt = C.ours_model("resnet18", ch, size, device)
        x = x_host.to(device).contiguous(memory_format=fmt)
        y = labels.to(device)
        fwd = torch.compile(model_o) if args.compile and gpu else model_o
        opt_o = C.sgd(model_o)
        ours_it = C.forever(train.TensorBatches(x, y, batch_size=C.BATCH_SIZE, seed=0).epoch)

        model_r = C.reference_model("resnet18", ch, size, device)
        opt_r = C.sgd(model_r)
        loader = C.reference_loader(C.PILDataset(images, labels, mean, std), workers=args.workers)
        ref_it = C.forever(lambda epoch: iter(loader))

        def ours():
            xb, yb = next(ours_it)
            C.ours_step(fwd, opt_o, xb, yb, device, amp=gpu)

        def baseline():
            xb, yb = next(ref_it)
            C.reference_step(model_r, opt_r, xb, yb, device)

        model_o.train(), model_r.train()
        times, cpu = C.interleaved({"ours": ours, "baseline": baseline}, device,
                                   {"ours": warmup, "baseline": warmup if gpu else 0}, steps)
        ips = {k: C.BATCH_SIZE / C.median(v) for k, v in times.items()}
        print(f"== {title}: {len(labels)} images")
        for k in ("ours", "baseline"):
            print(f"  train step {k:>9}: {ips[k]:9.1f} images/s  ({C.spread(times[k])} per step; "
                  f"process CPU time {C.median(cpu[k]):.3g} s per step)")
        print("  " + C.ratio_line("training throughput", ips["ours"], ips["baseline"], higher_is_better=True))
        if not gpu:
            print("  " + C.ratio_line("CPU seconds per step (less exposed to other processes' load)",
                                      C.median(cpu["ours"]), C.median(cpu["baseline"]), higher_is_better=False))

        tensor_loader = C.reference_loader(torch.utils.data.TensorDataset(x_host, labels),
                                           workers=args.workers)
        pipes = {"TensorBatches (ours)": C.forever(train.TensorBatches(x, y, batch_size=C.BATCH_SIZE).epoch),
                 "DataLoader(TensorDataset)": C.forever(lambda e: iter(tensor_loader)),
                 "DataLoader(PIL dataset) (baseline)": C.forever(lambda e: iter(loader))}
        only = loader_only(pipes, device, batches=100)
        for k, v in only.items():
            print(f"  input pipeline alone, {k:>34}: {v:11.0f} images/s")
        print("  " + C.ratio_line("input pipeline alone",
                                  only["TensorBatches (ours)"], only["DataLoader(PIL dataset) (baseline)"],
                                  higher_is_better=True))
        summary.append((title, ips["ours"], ips["baseline"]))
        del x, y, model_o, model_r, opt_o, opt_r
        print(flush=True)
    print("summary (images/s): " + "; ".join(f"{t}: ours {o:.1f}, baseline {b:.1f}, ratio {o / b:.3g}"
                                              for t, o, b in summary))


if __name__ == "__main__":
    main()
