"""Memory of one training step, measured: parameters, gradients, optimizer state, saved activations.

Zhu et al. (2021) fix the last layer to a simplex ETF and shrink the feature dimension to d = K and
report that this "reduces memory by over 20% on ResNet18". Memory means several things, so this
module measures each one separately for one real SGD step:

* ``trainable_params``  number of trainable parameters;
* ``param_bytes``       bytes of the trainable parameters;
* ``fixed_bytes``       bytes of what is stored but not trained (buffers: BatchNorm statistics, the
                        fixed ETF weight; frozen parameters);
* ``grad_bytes``        bytes of the ``.grad`` tensors after ``backward()``;
* ``optimizer_bytes``   bytes of the optimizer state after ``step()`` (SGD: one momentum buffer per
                        trainable parameter);
* ``saved_bytes``       bytes of the distinct storages that autograd keeps for the backward pass
                        (activations, the input batch, the labels), counted with
                        :func:`torch.autograd.graph.saved_tensors_hooks`; storages of parameters and
                        buffers are not counted again here;
* ``total_bytes``       the sum of the five above: what a training step must hold at its peak on any
                        device, before allocator overheads and temporaries;
* ``cuda_peak_bytes``   on a GPU, ``torch.cuda.max_memory_allocated`` over the step after
                        ``reset_peak_memory_stats`` (model, batch and all temporaries included);
                        NaN on a CPU.

Run as a script to (re)measure the table of the ``fixed_etf`` experiment and store it with provenance::

    python -m ncutils.memory --preset cpu --device cpu      # or --device cuda on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from typing import Callable, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SavedTensorCounter", "measure_training_step", "build_variant", "variant_name",
           "memory_table", "relative_savings", "memory_config", "measure_preset", "measure_run", "memory_label", "MEMORY_COLUMNS",
           "BYTE_COLUMNS", "main"]

EXPERIMENT = "fixed_etf"
BYTE_COLUMNS = ("param_bytes", "fixed_bytes", "grad_bytes", "optimizer_bytes", "saved_bytes",
                "total_bytes", "cuda_peak_bytes")
MEMORY_COLUMNS = ("trainable_params",) + BYTE_COLUMNS + ("saved_tensors", "saved_storages",
                                                         "step_seconds")


def _storage_key(t: torch.Tensor) -> tuple:
    storage = t.untyped_storage()
    return (str(t.device), storage.data_ptr())


class SavedTensorCounter:
    """Counts the tensors autograd saves for backward while the context is active.

    Several saved tensors often share one storage (an in-place ReLU saves its output, which is also
    the next convolution's saved input; views share their base): each storage is counted once, with
    its full size, keyed by its device and ``untyped_storage().data_ptr()``. A saved tensor is kept
    alive by the graph, so no two live saved storages share an address. Storages of the tensors in
    ``exclude`` (pass the model's parameters and buffers) are not counted.

    Attributes after the block: ``n_saved`` (pack calls), ``n_storages`` and ``nbytes`` (distinct
    counted storages and their bytes).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        exclude = list(exclude)
        if not all(isinstance(t, torch.Tensor) for t in exclude):
            raise TypeError("exclude must be an iterable of tensors (e.g. model.parameters())")
        self._exclude = {_storage_key(t) for t in exclude}
        self.storages: dict[tuple, int] = {}
        self.n_saved = 0
        self._hooks = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.n_saved += 1
        key = _storage_key(t)
        if key not in self._exclude:
            self.storages[key] = max(self.storages.get(key, 0), t.untyped_storage().nbytes())
        return t

    def __enter__(self) -> "SavedTensorCounter":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        hooks, self._hooks = self._hooks, None
        return hooks.__exit__(*exc)

    @property
    def n_storages(self) -> int:
        return len(self.storages)

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _check_batch(batch):
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2
            and all(isinstance(t, torch.Tensor) for t in batch)):
        raise TypeError("batch must be a pair (inputs, labels) of tensors")
    x, y = batch
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"batch must be inputs of shape (B, ...) and labels of shape (B,) with B >= 1, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.dtype != torch.long:
        raise ValueError(f"batch labels must be int64 class indices, got dtype {y.dtype}")
    return x, y


def measure_training_step(model: nn.Module, batch, optimizer_factory: Callable, loss_fn=None,
                          warmup_steps: int = 1) -> dict:
    """Measure the memory of one training step of ``model`` on ``batch`` (see the module docstring).

    ``optimizer_factory(params) -> Optimizer`` builds the optimizer over the trainable parameters;
    ``loss_fn(logits, labels)`` defaults to cross entropy. ``warmup_steps`` real steps run first (the
    optimizer state exists from then on, as in every step but the first; on a GPU the kernels are
    loaded); the measured step follows. The model is trained by these steps: pass a copy if it
    matters. The batch must already be on the model's device.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(optimizer_factory):
        raise TypeError("optimizer_factory must be a callable params -> torch.optim.Optimizer")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    x, y = _check_batch(batch)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if any(p.device != x.device for p in params):
        raise ValueError(f"batch is on {x.device} but the model's parameters are on "
                         f"{sorted({str(p.device) for p in params})}; move them to one device")
    loss_fn = loss_fn or F.cross_entropy
    opt = optimizer_factory(params)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer_factory must return a torch.optim.Optimizer, got {type(opt).__name__}")
    cuda = x.device.type == "cuda"
    model.train()

    def step(counter=None):
        opt.zero_grad(set_to_none=True)
        with counter or contextlib.nullcontext():
            loss = loss_fn(model(x), y)
        loss.backward()
        grads = _nbytes(p.grad for p in params if p.grad is not None)
        opt.step()
        return loss, grads

    for _ in range(warmup_steps):
        step()
    opt.zero_grad(set_to_none=True)
    counter = SavedTensorCounter(exclude=[*model.parameters(), *model.buffers()])
    if cuda:
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
    t0 = time.perf_counter()
    loss, grad_bytes = step(counter)
    if cuda:
        torch.cuda.synchronize(x.device)
    seconds = time.perf_counter() - t0
    if not math.isfinite(float(loss.detach())):
        raise FloatingPointError(f"the measured step gave a non-finite loss {float(loss.detach())}")
    peak = float(torch.cuda.max_memory_allocated(x.device)) if cuda else math.nan
    frozen = [p for p in model.parameters() if not p.requires_grad]
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    out = {"trainable_params": sum(p.numel() for p in params),
           "param_bytes": _nbytes(params),
           "fixed_bytes": _nbytes([*model.buffers(), *frozen]),
           "grad_bytes": grad_bytes,
           "optimizer_bytes": _nbytes(state),
           "saved_bytes": counter.nbytes}
    out["total_bytes"] = sum(out[k] for k in ("param_bytes", "fixed_bytes", "grad_bytes",
                                              "optimizer_bytes", "saved_bytes"))
    out.update(cuda_peak_bytes=peak, saved_tensors=counter.n_saved, saved_storages=counter.n_storages,
               step_seconds=seconds)
    return out


def build_variant(arch: str = "resnet18", classifier: str = "learned", feature_dim: Optional[int] = None,
                  width: Optional[int] = None, num_classes: int = 10, in_channels: int = 1,
                  input_size: int = 28, seed: int = 0, etf_bias: bool = False, stem: str = "cifar",
                  fixdim_block: str = "authors") -> nn.Module:
    """The network of one configuration, built exactly as :func:`ncutils.train.train` builds it.

    ``classifier``: "learned" (``nn.Linear`` with bias) or "etf" (:class:`ncutils.etf.ETFClassifier`,
    a fixed K x d simplex ETF, with a trainable bias if ``etf_bias``). ``feature_dim``: None for the
    architecture's default d (8 x width for resnet18), or e.g. K, which for resnet18 changes only the
    last residual block (``fixdim_block`` "authors" or "both", see :func:`ncutils.models.build_model`).
    ``stem`` (resnet18): "cifar" (3x3) or "imagenet" (7x7 stride 2 + max-pool).
    """
    from . import models

    if classifier not in ("learned", "etf"):
        raise ValueError(f"classifier must be 'learned' or 'etf', got {classifier!r}")
    torch.manual_seed(seed)
    return models.build_model(arch, num_classes=num_classes, in_channels=in_channels,
                              input_size=input_size, width=width, feature_dim=feature_dim,
                              classifier=classifier, etf_bias=etf_bias, stem=stem,
                              fixdim_block=fixdim_block)


def variant_name(variant: dict, feature_dim: Optional[int] = None) -> str:
    """A short label such as ``learned, d=512``, ``etf, d=10`` or ``etf, d=10, both convs``.

    ``feature_dim`` is the realised d (the variant's ``feature_dim`` is None for the default).
    ``both convs`` marks the d = K block with both 3x3 convolutions shrunk (``fixdim_block="both"``).
    """
    d = variant.get("feature_dim") if feature_dim is None else feature_dim
    both = ", both convs" if variant.get("fixdim_block", "authors") == "both" else ""
    return f"{variant.get('classifier', 'learned')}, d={'default' if d is None else d}{both}"


def _check_variants(variants) -> list[dict]:
    if isinstance(variants, dict) or not isinstance(variants, Sequence) or not variants:
        raise ValueError("variants must be a non-empty list of dicts with keys 'classifier' and 'feature_dim'")
    for v in variants:
        if not isinstance(v, dict) or set(v) - {"classifier", "feature_dim", "etf_bias", "fixdim_block"}:
            raise ValueError(f"each variant must be a dict with keys 'classifier', 'feature_dim' "
                             f"(and optionally 'etf_bias', 'fixdim_block'), got {v!r}")
    return list(variants)


def memory_table(variants, arch: str = "resnet18", width: Optional[int] = None, num_classes: int = 10,
                 inputs: Sequence = ((1, 28), (3, 32)), batch_sizes: Sequence[int] = (128,), device="cpu",
                 lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
                 warmup_steps: int = 1, seed: int = 0, progress: bool = False,
                 stems: Sequence[str] = ("cifar",)):
    """A pandas DataFrame: one row per (stem, input shape, batch size, variant) with the
    :data:`MEMORY_COLUMNS`. ``stems``: the resnet18 stems to measure ("cifar", "imagenet").

    ``inputs``: (channels, size) pairs, e.g. (1, 28) for MNIST and (3, 32) for CIFAR-sized images;
    the batch is seeded Gaussian noise with labels 0..K-1 repeated (memory does not depend on the
    values). Each variant is built with :func:`build_variant` and measured with
    :func:`measure_training_step` under SGD(lr, momentum, weight_decay).
    """
    import pandas as pd

    variants = _check_variants(variants)
    if isinstance(batch_sizes, (int, str)) or not isinstance(batch_sizes, Sequence) or not batch_sizes or \
            any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be a non-empty list of positive integers, got {batch_sizes!r}")
    if not inputs or not all(isinstance(s, (tuple, list)) and len(s) == 2 for s in inputs):
        raise ValueError(f"inputs must be a non-empty list of (channels, size) pairs, got {inputs!r}")
    if isinstance(stems, str) or not stems or any(s not in ("cifar", "imagenet") for s in stems):
        raise ValueError(f"stems must be a non-empty list of 'cifar' and/or 'imagenet', got {stems!r}")
    if arch != "resnet18" and tuple(stems) != ("cifar",):
        raise ValueError(f"stems other than 'cifar' need arch='resnet18', got {stems!r} for {arch!r}")
    if "imagenet" in stems and min(batch_sizes) < 2:
        raise ValueError(f"batch_sizes must be >= 2 with the 'imagenet' stem (its last stage runs at 1x1 "
                         f"pixels, where BatchNorm needs more than one value per channel), got {batch_sizes!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but no CUDA device is available")
    rows = []
    factory = lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum, weight_decay=weight_decay)  # noqa: E731
    for stem, (channels, size), batch_size in ((s, i, b) for s in stems for i in inputs for b in batch_sizes):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(batch_size, channels, size, size, generator=gen).to(device)
        y = (torch.arange(batch_size) % num_classes).to(device)
        extra = {"stem": stem} if arch == "resnet18" else {}
        for v in variants:
            model = build_variant(arch, v.get("classifier", "learned"), v.get("feature_dim"), width,
                                  num_classes, channels, size, seed, v.get("etf_bias", False),
                                  fixdim_block=v.get("fixdim_block", "authors"), **extra).to(device)
            row = {"stem": stem, "input": f"{channels}x{size}x{size}", "batch": batch_size,
                   "variant": variant_name(v, model.feature_dim),
                   "classifier": v.get("classifier", "learned"), "feature_dim": model.feature_dim,
                   **measure_training_step(model, (x, y), factory, warmup_steps=warmup_steps)}
            rows.append(row)
            if progress:
                print(f"  {stem} {row['input']} batch {batch_size} {row['variant']}: total "
                      f"{row['total_bytes'] / 2**20:.1f} MiB, saved {row['saved_bytes'] / 2**20:.1f} MiB, "
                      f"{row['step_seconds']:.2f} s", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return pd.DataFrame(rows)


def relative_savings(table, baseline: Optional[str] = None,
                     columns: Sequence[str] = ("trainable_params",) + BYTE_COLUMNS):
    """Per stem, input shape and batch size (those of the three the table has), ``1 - value /
    baseline value`` of each column.

    0.2 means 20% less than the baseline. ``baseline``: the variant label to compare with (default:
    the first row of each stem, input shape and batch size).
    """
    missing = [c for c in ("input", "variant", *columns) if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks the columns {missing}")
    keys = [k for k in ("stem", "input", "batch") if k in table.columns]
    parts = []
    for _, part in table.groupby(keys, sort=False):
        if baseline is None:
            base = part.iloc[0]
        else:
            match = part[part["variant"] == baseline]
            if match.empty:
                raise ValueError(f"baseline {baseline!r} is not a variant of the table "
                                 f"(it has {list(part['variant'])})")
            base = match.iloc[0]
        rel = part[keys + ["variant"]].copy()
        for c in columns:
            rel[c] = 1.0 - part[c].astype(float) / float(base[c])
        parts.append(rel)
    import pandas as pd

    return pd.concat(parts, ignore_index=True)


def memory_config(preset: str, device: str = "cpu") -> dict:
    """The config of the memory measurement of the ``fixed_etf`` preset on ``device``.

    On the CPU no byte count depends on a warmup step (the momentum buffers are counted after the
    measured step's ``opt.step()``; a test checks this), so the CPU measurement runs none; the
    preset's ``warmup_steps`` apply on a GPU, whose allocator peak and kernels do depend on it.
    """
    from . import config

    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    exp = config.get_preset(EXPERIMENT, preset)
    mem = exp["memory"]
    extra = list(mem.pop("extra_variants", ()))
    if device == "cpu":
        mem["warmup_steps"] = 0
    return {**mem, "variants": [*exp["variants"], *extra], "momentum": exp["momentum"],
            "weight_decay": exp["weight_decay"], "lr": exp["per_arch"][mem["arch"]]["lr"], "device": device}


def measure_run(run, cfg: dict, progress: bool = False) -> dict:
    """Measure the memory table of ``cfg`` (a :func:`memory_config` of ``run.preset``) into ``run``:
    tables ``memory`` (absolute) and ``savings`` (relative to the first variant); returns the
    summary, the total saving of the authors' fixed-ETF d = K network (the last training variant)
    at the largest batch, per stem and input."""
    from . import config

    ours = variant_name(config.get_preset(EXPERIMENT, run.preset)["variants"][-1])
    kw = {k: v for k, v in cfg.items() if k != "device"}
    table = memory_table(device=cfg["device"], progress=progress, **kw)
    rel = relative_savings(table)
    run.save_table("memory", table)
    run.save_table("savings", rel)
    top = rel[(rel["batch"] == rel["batch"].max()) & (rel["variant"] == ours)]
    return {f"total_saving_{r.stem}_{r.input}_batch{r.batch}": float(r.total_bytes) for r in top.itertuples()}


def measure_preset(preset: str, device: str = "cpu", force: bool = False, progress: bool = False):
    """Load the stored memory table of ``preset`` on ``device``, or measure and store it; the Run.

    The run holds the table ``memory`` (absolute) and ``savings`` (relative to the first variant);
    its summary, the total saving of the authors' fixed-ETF d = K network (the last training variant)
    at the largest batch, per stem and input (see :func:`measure_run`).
    """
    from . import store

    cfg = memory_config(preset, device)
    return store.load_or_run(EXPERIMENT, preset, cfg, lambda run: measure_run(run, cfg, progress),
                             label=memory_label(device), force=force, device=device)


def memory_label(device: str) -> str:
    return f"memory-{device}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ncutils.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", help="preset of the fixed_etf experiment (smoke, cpu, paper)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--force", action="store_true", help="measure again even if a stored table exists")
    parser.add_argument("--out", default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    run = measure_preset(args.preset, args.device, force=args.force, progress=True)
    table = run.table("memory")
    if args.out:
        from .store import atomic_write

        atomic_write(args.out, table.to_csv(index=False, float_format="%.9g"))
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        mib = table.copy()
        for c in BYTE_COLUMNS:
            mib[c] = mib[c] / 2 ** 20
        print(mib.drop(columns=["classifier"]).round(3).to_string(index=False))
        print("\nrelative saving vs the first variant:")
        print(run.table("savings").round(3).to_string(index=False))
    print(f"\nstored in {run.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
