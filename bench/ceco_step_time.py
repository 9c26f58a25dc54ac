"""Seconds per SGD step of each arm of chapter 4's camvid_ceco study (issue 13), to size its runs.

Builds each arm's model exactly as ``ncutils.seg.train_segmentation`` does, then times training
steps on the preset's crops, the arms interleaved round-robin so that a busy machine slows them
alike. Prints the median seconds per step, the ratio to the baseline, and the extrapolated run
time from a measured baseline run (``--baseline-minutes``, default: the wall time of the committed
``camvid_cr`` cpu baseline seed 0).

    python bench/ceco_step_time.py --preset cpu --steps 8
"""

from __future__ import annotations

import statistics
import time

import _common  # noqa: F401  (puts the checkout on sys.path, finds the data)
import torch
import torch.nn.functional as F

from ncutils import ceco, data, seg, store


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--baseline-minutes", type=float, default=None)
    args = p.parse_args()
    device = _common.pick_device(args.device)
    torch.set_num_threads(1)
    arms = {}
    for name, _, seed, cfg in ceco.ceco_variant_configs(args.preset):
        if seed == 0:
            arms[name] = cfg
    first = next(iter(arms.values()))
    _common.header(f"camvid_ceco step time ({args.preset})", device, batch_size=first["batch_size"])
    xtr, ytr = data.load_camvid("train")
    k = len(data.CAMVID_CLASSES)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(xtr), generator=gen)[:first["batch_size"]]
    xb, yb = seg.augment_batch(xtr[idx], ytr[idx], first["crop"], first["flip"], gen)
    x, y = data.camvid_to_float(xb).to(device), yb.to(device).long()
    state = {}
    for name, cfg in arms.items():
        model = seg.build_seg_model(cfg, k).to(device).train()
        opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-3, momentum=0.9)
        state[name] = (cfg, model, opt, ceco.class_weights(cfg, k), getattr(model, "ceco", None))

    def step(name):
        cfg, model, opt, w, head = state[name]
        logits, h = model.logits_and_features(x)
        loss = F.cross_entropy(logits, y, weight=None if w is None else w.to(device), ignore_index=255)
        if cfg["cr_weight"] > 0:
            cr = head.loss(h, y, generator=gen) if head is not None else \
                model.cr_loss(h, y, scale=float(cfg["cr_scale"]), normalize=bool(cfg["cr_normalize"]))
            loss = loss + cfg["cr_weight"] * cr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {name: [] for name in arms}
    for name in arms:
        step(name)  # warm-up
    for _ in range(args.steps):
        for name in arms:
            t0 = time.perf_counter()
            step(name)
            _common.sync(device)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["baseline"])
    minutes = args.baseline_minutes
    if minutes is None:
        ref = store.Run("camvid_cr", args.preset, arms["baseline"], label="baseline-s0")
        minutes = ref.info["wall_seconds"] / 60 if ref.complete else None
    for name, ts in times.items():
        med = statistics.median(ts)
        est = "" if minutes is None else f", run about {minutes * med / base:.0f} min"
        print(f"{name:10s} {med:.3f} s/step ({_common.spread(ts)}), x{med / base:.2f} of the baseline{est}")


if __name__ == "__main__":
    main()
