"""Shared pieces of the bench scripts: environment header, timers, and the reference implementation.

The *reference* is the way Papyan, Han & Donoho's public Colab notebook does things, written for
clarity rather than speed: a ``torch.utils.data.DataLoader`` over a torchvision-style dataset that
decodes every sample through PIL and ``ToTensor`` + ``Normalize``, float32 contiguous tensors, a
``.item()`` per training step for its progress bar, and the collapse metrics computed by
``analysis()``: two passes over the train set (class means, then the within-class covariance as the
sum of per-sample outer products, materialised class by class as a B x d x d tensor), the
nearest-class-center decision by a per-sample Python loop, the pseudo-inverse of Sigma_B from
``scipy.sparse.linalg.svds``. It is re-implemented here from that description, keeping its
structure and its float32 arithmetic, so the bench scripts can time both ways in one process.

*Ours* is what ``ncutils.train`` does (the same private helpers are called, so the figures follow
the library): the dataset as one tensor on the device, ``TensorBatches`` for shuffling and batching,
on a GPU channels_last + bf16 autocast, class statistics accumulated in float64 in one pass.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
if "NCUTILS_DATA" not in os.environ and (ROOT.parent / "shared" / "data" / "MNIST").is_dir():
    os.environ["NCUTILS_DATA"] = str(ROOT.parent / "shared" / "data")

from ncutils import data, train  # noqa: E402

BATCH_SIZE = 128  # Papyan et al.'s batch size, the one the paper preset uses


# ----------------------------------------------------------------------------- environment

def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p


def pick_device(name: str | None) -> torch.device:
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch.cuda.is_available() is False")
    return device


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def header(title: str, device: torch.device, batch_size: int | None = BATCH_SIZE, **extra) -> None:
    """Print what a figure needs to be reproduced: date, commit, device, versions, batch size."""
    print(f"# {title}")
    rows = {"date": datetime.date.today().isoformat(), "commit": git_commit(),
            "device": device_name(device), "torch": torch.__version__,
            "python": platform.python_version(), "cpu cores (os)": os.cpu_count()}
    if batch_size is not None:
        rows["batch size"] = batch_size
    rows.update(extra)
    for key, value in rows.items():
        print(f"{key:>16}: {value}")
    print(flush=True)


# ----------------------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, warmup: dict[str, int],
                repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time each function ``repeats`` times after ``warmup[name]`` untimed calls, alternating the
    functions round by round (and their order), so that load from other processes on a shared
    machine falls on all of them alike. Returns the wall-clock seconds and the CPU seconds of this
    process (all threads; ``time.process_time``) of every timed call."""
    for name, fn in fns.items():
        for _ in range(warmup.get(name, 0)):
            fn()
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            c0 = time.process_time()
            wall[name].append(clock(fns[name], device))
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def median(values) -> float:
    return statistics.median(values)


def spread(values) -> str:
    return f"median of {len(values)}, range {min(values):.3g}-{max(values):.3g} s"


def ratio_line(what: str, ours: float, baseline: float, higher_is_better: bool) -> str:
    """'ours/baseline = r (x times faster)' with the direction spelled out."""
    r = ours / baseline
    speedup = r if higher_is_better else 1.0 / r
    return f"{what}: ours/baseline = {r:.3g}  (ours is {speedup:.3g}x {'faster' if speedup >= 1 else 'slower'})"


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


# ----------------------------------------------------------------------------- data

def uint8_images(name: str, n: int | None, seed: int = 0):
    """(images uint8 N x H x W [x 3], labels int64 N, normalisation mean, std, channels, size).

    ``"fashionmnist"``: the real train set (first ``n`` of a seeded permutation when ``n`` is set).
    ``"synthetic32"``: random 32 x 32 RGB images, CIFAR-10 sized (50,000 by default): only the
    shapes matter for throughput.
    """
    if name == "fashionmnist":
        images, labels = data.load_dataset("fashionmnist", "train")
        if n is not None:
            idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n]
            images, labels = images[idx], labels[idx]
        info = data.DATASETS["fashionmnist"]
        return images, labels, (info.mean,), (info.std,), 1, 28
    if name == "synthetic32":
        n = 50_000 if n is None else n
        gen = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=gen)
        labels = torch.arange(n) % 10
        return images, labels, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), 3, 32
    raise ValueError(f"name must be 'fashionmnist' or 'synthetic32', got {name!r}")


def as_float(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 N x H x W [x C] -> normalised float32 N x C x H x W (what ToTensor + Normalize give)."""
    x = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    x = x.to(torch.float32) / 255.0
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


class PILDataset(torch.utils.data.Dataset):
    """A dataset that does per sample what ``torchvision.datasets.MNIST`` / ``CIFAR10`` do in
    ``__getitem__``: ``Image.fromarray`` on the uint8 array, then the transform
    (``ToTensor`` + ``Normalize``, as in the reference notebook; without torchvision, the same two
    steps written out)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std):
        self.images, self.labels = images.numpy(), labels.tolist()
        try:
            import torchvision.transforms as T

            self.transform = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
        except ImportError:
            m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

            def transform(img):
                a = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
                a = a.unsqueeze(0) if a.ndim == 2 else a.permute(2, 0, 1)
                return (a.float().div(255) - m) / s

            self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def reference_loader(dataset, batch_size: int = BATCH_SIZE, shuffle: bool = True, workers: int = 0,
                     pin_memory: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       num_workers=workers, pin_memory=pin_memory, generator=gen)


class EpochOrder(torch.utils.data.Sampler):
    """The sample order of ``TensorBatches.order(epoch)`` as a DataLoader sampler."""

    def __init__(self, order: torch.Tensor):
        self.indices = order.tolist()

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def forever(make_epoch: Callable[[int], Iterator]) -> Iterator:
    """Batches of epoch 1, 2, ... without end (each epoch's iterator made afresh, as in training)."""
    for epoch in itertools.count(1):
        yield from make_epoch(epoch)


# ----------------------------------------------------------------------------- training steps

def ours_model(arch: str, channels: int, size: int, device: torch.device, seed: int = 0, **kw):
    """The model as ``ncutils.train`` prepares it: channels_last on a GPU for conv nets."""
    from ncutils import models

    torch.manual_seed(seed)
    model = models.build_model(arch, in_channels=channels, input_size=size, **kw)
    fmt = torch.channels_last if device.type == "cuda" and arch != "mlp" else torch.contiguous_format
    return model.to(device=device, memory_format=fmt), fmt


def reference_model(arch: str, channels: int, size: int, device: torch.device, seed: int = 0, **kw):
    from ncutils import models

    torch.manual_seed(seed)
    return models.build_model(arch, in_channels=channels, input_size=size, **kw).to(device)


def sgd(model, lr: float = 0.0675, momentum: float = 0.9, weight_decay: float = 5e-4):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def ours_step(model, opt, xb, yb, device: torch.device, amp: bool):
    """One SGD step exactly as ``ncutils.train.train`` takes it."""
    with train._autocast(device, amp):
        loss = F.cross_entropy(model(xb).float(), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def reference_step(model, opt, xb, yb, device: torch.device):
    """One SGD step the way the reference notebook takes it: host batch -> device, float32,
    loss and batch accuracy read back with ``.item()`` for the progress bar."""
    xb, yb = xb.to(device), yb.to(device)
    opt.zero_grad()
    out = model(xb)
    loss = F.cross_entropy(out, yb)
    loss.backward()
    opt.step()
    return loss.item(), torch.mean((out.argmax(1) == yb).float()).item()


@torch.no_grad()
def reference_error(model, loader, device: torch.device) -> float:
    model.eval()
    wrong = n = 0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        wrong += int((model(xb).argmax(1) != yb).sum().item())
        n += len(yb)
    model.train()
    return wrong / n


# ----------------------------------------------------------------------------- reference metrics

def _reference_close(mean_sum, counts, sigma_w, weight, k: int) -> dict:
    """The notebook's closing computations on (class sums, counts, Sigma_W) in float32."""
    from scipy.sparse.linalg import svds

    means = torch.stack([mean_sum[c] / counts[c] for c in range(k)]).T  # d x K
    centered = means - means.mean(1, keepdim=True)
    sigma_b = centered @ centered.T / k
    vecs, vals, _ = svds(sigma_b.cpu().numpy(), k=k - 1)
    inv_sb = vecs @ np.diag(vals ** -1) @ vecs.T
    w = weight.detach().to(torch.float32)
    m_norms, w_norms = centered.norm(dim=0), w.T.norm(dim=0)

    def coherence(v):
        g = v.T @ v + torch.ones(k, k, device=v.device) / (k - 1)
        g -= torch.diag(torch.diag(g))
        return float(g.abs().sum()) / (k * (k - 1))

    return {"nc1": float(np.trace(sigma_w.cpu().numpy() @ inv_sb)) / k,
            "equinorm_means": float(m_norms.std() / m_norms.mean()),
            "equinorm_classifiers": float(w_norms.std() / w_norms.mean()),
            "maxangle_means": coherence(centered / m_norms),
            "maxangle_classifiers": coherence(w.T / w_norms),
            "self_duality": float((w.T / w.norm() - centered / centered.norm()).norm() ** 2),
            "_means": means}


@torch.no_grad()
def reference_metrics(feature_batches: Callable[[], Iterator], weight, bias, k: int,
                      per_sample_loop: bool = False, timings: dict | None = None) -> dict:
    """Papyan et al.'s ``analysis()`` on (features, labels, logits-or-None) batches, float32.

    Pass 1 sums the class means; pass 2 accumulates Sigma_W from per-sample outer products (the
    notebook materialises them class by class as a B_c x d x d tensor; ``per_sample_loop=True``
    adds them one sample at a time in a Python loop instead) and decides the nearest class center
    per sample. ``feature_batches()`` is called once per pass, as the notebook reruns the network.
    ``timings``, when given, receives the seconds of the two passes (``"passes"``, which grow with
    N) and of the closing computations (``"close"``, which do not).
    """
    t0 = time.perf_counter()
    mean_sum, counts = [0.0] * k, [0] * k
    for h, y, _ in feature_batches():
        for c in range(k):
            idx = (y == c).nonzero(as_tuple=True)[0]
            if len(idx):
                mean_sum[c] = mean_sum[c] + h[idx].sum(0)
                counts[c] += len(idx)
    means_dk = torch.stack([mean_sum[c] / counts[c] for c in range(k)]).T  # d x K, as M in the notebook
    sigma_w, match = 0.0, 0
    w = weight.detach().to(torch.float32)
    b = None if bias is None else bias.detach().to(torch.float32)
    for h, y, logits in feature_batches():
        if logits is None:  # features only: apply the classifier as the network's last layer would
            logits = h @ w.T.to(h.device) + (0 if b is None else b.to(h.device))
        for c in range(k):
            idx = (y == c).nonzero(as_tuple=True)[0]
            if len(idx) == 0:
                continue
            h_c = h[idx]
            z = h_c - means_dk[:, c].unsqueeze(0)
            if per_sample_loop:
                for i in range(len(z)):
                    sigma_w = sigma_w + torch.outer(z[i], z[i])
            else:
                sigma_w = sigma_w + torch.matmul(z.unsqueeze(-1), z.unsqueeze(1)).sum(0)
            net_pred = logits[idx].argmax(1)
            scores = torch.stack([torch.norm(h_c[i] - means_dk.T, dim=1) for i in range(len(h_c))])
            match += int((scores.argmin(1) == net_pred).sum().item())
    n = sum(counts)
    sigma_w = sigma_w / n
    if isinstance(sigma_w, torch.Tensor) and sigma_w.is_cuda:
        torch.cuda.synchronize(sigma_w.device)
    t1 = time.perf_counter()
    out = _reference_close(mean_sum, counts, sigma_w, weight, k)
    out.pop("_means")
    out["ncc_mismatch"] = 1.0 - match / n
    if timings is not None:
        timings.update(passes=t1 - t0, close=time.perf_counter() - t1)
    return out


def feature_batches_of(h: torch.Tensor, y: torch.Tensor, batch_size: int = BATCH_SIZE):
    """A zero-argument callable yielding (features, labels, None) batches of in-memory features."""
    def batches():
        for i in range(0, len(y), batch_size):
            yield h[i:i + batch_size], y[i:i + batch_size], None
    return batches


def network_batches_of(model, loader, device: torch.device):
    """(features, labels, logits) of a network over a DataLoader, as the notebook's forward hook."""
    @torch.no_grad()
    def batches():
        model.eval()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            logits, h = model.logits_and_features(xb)
            yield h.float(), yb, logits.float()
    return batches


def synthetic_features(n: int = 60_000, d: int = 512, k: int = 10, seed: int = 0,
                       spread: float = 1.0, device="cpu"):
    """Class-structured float32 features (N x d), balanced labels, a classifier (W K x d, b K)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    y = y[torch.randperm(n, generator=gen)]
    centers = 3.0 * torch.randn(k, d, generator=gen)
    h = centers[y] + spread * torch.randn(n, d, generator=gen)
    w, b = torch.randn(k, d, generator=gen), torch.randn(k, generator=gen)
    return h.to(device), y.to(device), w.to(device), b.to(device)


def rel_diff(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-300) if math.isfinite(a) and math.isfinite(b) else math.inf
