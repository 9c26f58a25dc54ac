"""The training loop of the book: Papyan et al.'s protocol, collapse metrics, checkpoint + resume.

No plotting here. :func:`train` trains one network described by a flat run config, evaluates the
train error every epoch, and the test error and the collapse metrics of the train set at the
snapshot epochs (log-spaced, plus every ``snapshot_every`` epochs if set, plus the onset of the
terminal phase); other epochs leave the test columns empty, so long runs are not dominated by
evaluation. It writes an atomic checkpoint at most every ``checkpoint_seconds()`` (30 s; always after
the last epoch) and resumes from it, so an interrupted run ends with the same numbers as an
uninterrupted one (bitwise on CPU).

On a GPU the same loop takes the fast path: the dataset lives on the device as one tensor, batches
are drawn by on-device indexing, convolutional models run channels_last under bf16 autocast, and
collapse metrics are still accumulated in float64. ``config["compile"] = True`` also wraps the
training forward pass in ``torch.compile`` (on a GPU only; a no-op on the CPU).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checks
from . import config as _config
from .metrics import EXTRA_KEYS, METRIC_KEYS, ClassStats, metrics_from_stats, ncc_mismatch_count
from .store import Run, atomic_write, load_or_run

__all__ = ["CheckpointError", "TensorBatches", "run_config", "train", "run_experiment",
           "checkpoint_seconds", "save_checkpoint", "load_checkpoint", "resume_checkpoint", "HISTORY_COLUMNS", "tpt_summary",
           "variant_label", "oversample", "snapshot_set", "lr_sweep", "planned_runs", "best_by_test_error",
           "NC_FOLD_KEYS"]

HISTORY_COLUMNS = ("epoch", "lr", "train_error", "test_error", "train_loss", "test_loss",
                   "epoch_seconds") + METRIC_KEYS + EXTRA_KEYS

_REQUIRED = ("dataset", "arch", "epochs", "lr", "batch_size", "momentum", "weight_decay",
             "lr_milestones", "lr_gamma", "seed", "n_snapshots")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, truncated, or from another config."""


class TensorBatches:
    """Mini-batches of tensors already on their device, in a seeded order per epoch.

    Epoch ``e`` visits every sample exactly once, in the order ``randperm(N)`` drawn from a CPU
    generator seeded with ``(seed, e)``: the order depends only on the seed and the epoch, which is
    what makes resuming exact. No DataLoader, no host-device copies per batch.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int = 0, shuffle: bool = True):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("tensors must be one or more tensors with the same first dimension")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.tensors, self.batch_size, self.seed, self.shuffle = tensors, batch_size, seed, shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.tensors[0]) / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.tensors[0])
        if not self.shuffle:
            return torch.arange(n)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=gen)

    def epoch(self, epoch: int = 0):
        order = self.order(epoch).to(self.tensors[0].device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


def run_config(experiment_cfg: dict, dataset: str, arch: str, seed: int = 0, **overrides) -> dict:
    """The flat config of one training run, picked out of an experiment preset.

    A preset's ``per_arch`` dict holds each architecture's own settings (lr, width, data size...),
    its optional ``per_dataset`` dict each dataset's (applied after ``per_arch``). Its ``seeds`` (the
    seeds a chapter trains with) and ``lr_sweep`` are not part of a run's config.
    """
    per_arch = experiment_cfg.get("per_arch", {})
    if arch not in per_arch:
        raise ValueError(f"the preset has no settings for arch {arch!r} (it has {sorted(per_arch)})")
    per_dataset = experiment_cfg.get("per_dataset", {})
    if not isinstance(per_dataset, dict) or any(not isinstance(v, dict) for v in per_dataset.values()):
        raise ValueError(f"the preset's per_dataset must map dataset names to dicts of settings, "
                         f"got {per_dataset!r}")
    cfg = {k: v for k, v in experiment_cfg.items()
           if k not in ("datasets", "archs", "per_arch", "per_dataset", "lr_sweep", "seeds")}
    cfg.update(per_arch[arch])
    cfg.update(per_dataset.get(dataset, {}), dataset=dataset, arch=arch, seed=seed, **overrides)
    return cfg


# Keys a run config may hold besides _REQUIRED; any other key is refused (a typo would be ignored).
# (``steps`` and ``K_A`` are read by chapter 5's wrapper, ncutils.minority, not by this loop.)
_OPTIONAL = ("optimizer", "augment", "n_per_class", "test_per_class", "width", "feature_dim",
             "classifier", "etf_bias", "counts", "compile", "amp", "snapshot_every", "oversample", "steps",
             "K_A", "stem", "fixdim_block", "train_eval_every")  # stem, fixdim_block: checked by models.build_model


def milestone_epochs(cfg: dict) -> list[int]:
    """The epochs after which the lr is multiplied by ``lr_gamma``: ``lr_milestones`` entries are
    epochs (ints) or fractions of ``epochs`` (floats in (0, 1), floored)."""
    epochs, out = cfg["epochs"], []
    if isinstance(cfg["lr_milestones"], (str, bytes)) or not isinstance(cfg["lr_milestones"], (list, tuple)):
        raise ValueError(f"config['lr_milestones'] must be a list of epochs (ints) or fractions of "
                         f"epochs (floats in (0, 1)), got {cfg['lr_milestones']!r}")
    for i, m in enumerate(cfg["lr_milestones"]):
        name = f"config['lr_milestones'][{i}]"
        if isinstance(m, float):
            out.append(int(checks.check_real(m, name, 0.0, 1.0, low_open=True, high_open=True) * epochs))
        else:
            out.append(checks.check_int(m, name))
    if any(not 0 < m < epochs for m in out) or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"config['lr_milestones'] = {list(cfg['lr_milestones'])!r} gives the epochs {out} "
                         f"for epochs = {epochs}; they must increase strictly within 1..{epochs - 1}")
    return out


def _check_config(cfg: dict) -> None:
    """Refuse a run config with a missing, unknown or invalid key, naming the key."""
    if not isinstance(cfg, dict):
        raise TypeError(f"config must be a dict, got {type(cfg).__name__}")
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"run config is missing {missing}")
    unknown = sorted(set(cfg) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ValueError(f"run config has unknown keys {unknown} (known: {sorted(_REQUIRED + _OPTIONAL)})")
    for key in ("epochs", "batch_size", "n_snapshots"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"config[{key!r}] must be a positive integer, got {cfg[key]!r}")
    for key in ("dataset", "arch"):
        if not isinstance(cfg[key], str):
            raise ValueError(f"config[{key!r}] must be a string, got {cfg[key]!r}")
    checks.check_real(cfg["lr"], "config['lr']", 0.0, low_open=True)
    checks.check_real(cfg["lr_gamma"], "config['lr_gamma']", 0.0, 1.0, low_open=True)
    checks.check_real(cfg["momentum"], "config['momentum']", 0.0, 1.0, high_open=True)
    checks.check_real(cfg["weight_decay"], "config['weight_decay']", 0.0)
    checks.check_seed(cfg["seed"], "config['seed']")
    milestone_epochs(cfg)
    if isinstance(cfg.get("test_per_class"), str) and cfg["test_per_class"] != "all":
        raise ValueError(f"config['test_per_class'] must be a positive int, None (balanced to the rarest "
                         f"class) or 'all' (the whole test split), got {cfg['test_per_class']!r}")
    for key in ("n_per_class", "test_per_class", "width", "feature_dim", "snapshot_every", "steps", "K_A",
                "train_eval_every"):
        if cfg.get(key) is not None and cfg.get(key) != "all":
            checks.check_int(cfg[key], f"config[{key!r}]", 1)
    for key in ("compile", "etf_bias"):
        checks.check_bool(cfg.get(key, False), f"config[{key!r}]")
    if cfg.get("augment", False) is not False:
        raise ValueError(f"config['augment'] must be False (this loop trains without augmentation), "
                         f"got {cfg['augment']!r}")
    checks.check_choice(cfg.get("optimizer", "sgd"), "config['optimizer']", ("sgd",))
    checks.check_choice(cfg.get("classifier", "learned"), "config['classifier']", ("learned", "etf"))
    amp = cfg.get("amp", "auto")
    if not (amp is True or amp is False or amp == "auto"):
        raise ValueError(f"config['amp'] must be True, False or 'auto', got {amp!r}")
    counts = cfg.get("counts")
    if counts is not None:
        if isinstance(counts, (str, bytes)) or not isinstance(counts, (list, tuple)) or len(counts) < 2:
            raise ValueError(f"config['counts'] must be a list of training samples per class, got {counts!r}")
        for c, n in enumerate(counts):
            if checks.check_int(n, f"config['counts'][{c}]") < 1:
                raise ValueError(f"config['counts'][{c}] = {n}: every class needs at least one training "
                                 "sample (a class without any has no classifier row, and its test "
                                 "images would carry an unknown label)")
        if cfg.get("n_per_class") is not None:
            raise ValueError("config holds both 'counts' and 'n_per_class'; give one of them")


def snapshot_set(cfg: dict) -> set:
    """The epochs at which a run evaluates the test set and the collapse metrics (besides the onset)."""
    snaps = set(_config.snapshot_epochs(cfg["epochs"], cfg["n_snapshots"]))
    every = cfg.get("snapshot_every")
    if every:
        snaps |= set(range(every, cfg["epochs"] + 1, every))
    return snaps


def oversample(x: torch.Tensor, y: torch.Tensor, factors=None):
    """``(x, y)`` with every sample of class k repeated ``factors[k]`` times (the authors' minority
    oversampling of Fang et al. 2021: each epoch visits a minority sample ``factors[k]`` times, in a
    fresh shuffled order); ``factors=None`` returns ``(x, y)`` unchanged."""
    if factors is None:
        return x, y
    k = int(y.max()) + 1
    if isinstance(factors, (str, bytes)) or not hasattr(factors, "__len__") or len(factors) != k or any(
            isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in factors):
        raise ValueError(f"config['oversample'] must be {k} positive integers (one repeat factor per class), "
                         f"got {factors!r}")
    reps = torch.tensor(factors, device=y.device)[y]
    idx = torch.repeat_interleave(torch.arange(len(y), device=y.device), reps)
    return x[idx], y[idx]


_CKPT_MAGIC = b"NCUTILS-CKPT-1\n"  # then the payload's sha256 (64 hex digits) and a newline


def checkpoint_seconds() -> float:
    """Seconds between two checkpoints of a training run: ``$NCUTILS_CHECKPOINT_SECONDS``, default
    30. The last epoch (and the last of a ``stop_after`` call) is always saved; an interruption loses
    at most this much training, which a resume redoes identically (batches are seeded per epoch).
    0 saves every epoch. Writing one checkpoint of the 3 x 512 MLP takes about 0.1 s, a sixth of one
    of its epochs on 5,000 images, so saving every epoch would cost the chapter 5 runs about 15%."""
    raw = os.environ.get("NCUTILS_CHECKPOINT_SECONDS", "30")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"NCUTILS_CHECKPOINT_SECONDS must be a number of seconds >= 0, got {raw!r}")
    return value


def save_checkpoint(path: Path | str, state: dict) -> None:
    """``torch.save`` through a temporary file and an atomic rename, behind an integrity header:
    ``NCUTILS-CKPT-1``, the sha256 of the payload, then the payload (a torch zip file)."""
    import hashlib
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    atomic_write(path, _CKPT_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_checkpoint(path: Path | str, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` after checking the sha256 in its header (torch
    does not check the zip CRCs: a flipped bit would otherwise load silently). A damaged, corrupt or
    truncated file is refused with :class:`CheckpointError`; a checkpoint without the header
    (written by older code) is loaded as it is."""
    import hashlib
    import io

    data = Path(path).read_bytes()
    if data.startswith(_CKPT_MAGIC):
        head = len(_CKPT_MAGIC)
        digest, payload = data[head:head + 64].decode("ascii", "replace"), data[head + 65:]
        if len(data) < head + 65 or hashlib.sha256(payload).hexdigest() != digest:
            raise CheckpointError(f"checkpoint {path} is damaged (corrupt or truncated: its sha256 does "
                                  "not match the one in its header, e.g. bit rot or a partial copy); "
                                  "delete it to restart the run")
        data = payload
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # zip, unpickling and EOF errors all mean the same thing here
        raise CheckpointError(f"checkpoint {path} is damaged (corrupt or truncated) and cannot be loaded "
                              f"({type(err).__name__}: {err}); delete it to restart the run") from err


def resume_checkpoint(run: Run, device=None, model=None, optimizer=None) -> dict | None:
    """The checkpoint state of ``run`` (``run.path/checkpoint.pt``), or None when there is none.

    A checkpoint written for another config than ``run.key`` is refused (``CheckpointError``).
    ``model`` and ``optimizer``, when given, get their state loaded from it.
    """
    path = run.path / "checkpoint.pt"
    if not path.exists():
        return None
    state = load_checkpoint(path, map_location=device)
    if state.get("config_hash") != run.key:
        raise CheckpointError(f"checkpoint {path} belongs to config {state.get('config_hash')}, "
                              f"not {run.key}; delete it to restart the run")
    if model is not None:
        model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def _evaluate(model, x, y, num_classes: int, device, amp: bool, keep_features: bool,
              batch_size: int = 1024):
    """Error and mean cross entropy; class statistics of the features when asked."""
    model.eval()
    wrong, loss, feats = 0, 0.0, []
    stats = ClassStats(num_classes) if keep_features else None
    for (xb, yb) in TensorBatches(x, y, batch_size=batch_size, shuffle=False).epoch():
        with _autocast(device, amp):
            logits, h = model.logits_and_features(xb)
        logits = logits.float()
        wrong += int((logits.argmax(1) != yb).sum())
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        if keep_features:
            stats.update(h, yb)
            feats.append(h.float())
    return wrong / len(y), loss / len(y), stats, (torch.cat(feats) if keep_features else None)


def _nc_snapshot(model, stats, feats) -> dict:
    weight = model.classifier.weight.detach()
    bias = getattr(model.classifier, "bias", None)
    bias = None if bias is None else bias.detach()
    wrong = ncc_mismatch_count(feats, stats.means, weight, bias)
    return metrics_from_stats(stats, weight, bias, ncc_mismatch=wrong / len(feats), extras=True)


def _prepare(cfg: dict, device: torch.device):
    from . import data, models

    x, y = data.get_data(cfg["dataset"], "train", n_per_class=cfg.get("n_per_class"), seed=cfg["seed"],
                         counts=cfg.get("counts"))
    xt, yt = data.get_data(cfg["dataset"], "test", n_per_class=cfg.get("test_per_class"),
                           seed=cfg["seed"])
    k = int(y.max()) + 1
    torch.manual_seed(cfg["seed"])
    classifier = cfg.get("classifier", "learned")
    if classifier not in ("learned", "etf"):
        raise ValueError(f"config['classifier'] must be 'learned' or 'etf', got {classifier!r}")
    arch_kw = {key: cfg[key] for key in ("stem", "fixdim_block") if key in cfg}  # resnet18 only
    model = models.build_model(cfg["arch"], num_classes=k, in_channels=x.shape[1], input_size=x.shape[-1],
                               width=cfg.get("width"), feature_dim=cfg.get("feature_dim"),
                               classifier=classifier, etf_bias=cfg.get("etf_bias", False), **arch_kw)
    channels_last = device.type == "cuda" and x.ndim == 4
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    to_dev = lambda t: t.to(device).contiguous(memory_format=fmt) if t.ndim == 4 else t.to(device)  # noqa: E731
    return model, to_dev(x), y.to(device), to_dev(xt), yt.to(device), k


def train(run: Run, cfg: dict, device=None, progress: bool | None = None,
          stop_after: int | None = None) -> dict:
    """Train the network of ``cfg`` into ``run`` (history table + checkpoint) and return a summary.

    Resumes from ``run.path/checkpoint.pt`` when present. ``stop_after`` ends the call after that
    many epochs of this call (an interruption, for chunked runs and tests); the summary then has
    ``"complete": False``.
    """
    _check_config(cfg)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = cfg.get("amp", "auto") in (True, "auto") and device.type == "cuda"
    if progress is None:
        progress = os.environ.get("NCUTILS_PROGRESS", "1") != "0"
    model, x, y, xt, yt, k = _prepare(cfg, device)
    # Compiled training forward shares the parameters; checkpoints keep the plain module's keys.
    step_model = torch.compile(model) if cfg.get("compile") and device.type == "cuda" else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    milestones = milestone_epochs(cfg)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg["lr_gamma"])
    snapshots = snapshot_set(cfg)
    ckpt_path, key = run.path / "checkpoint.pt", run.key
    history, start_epoch, wall, tpt = [], 1, 0.0, None
    state = resume_checkpoint(run, device, model, opt)
    if state is not None:
        sched.load_state_dict(state["scheduler"])
        history, start_epoch, wall = state["history"], state["epoch"] + 1, state["wall_seconds"]
        tpt = next((r["epoch"] for r in history if r["train_error"] == 0.0), None)
    xs, ys = oversample(x, y, cfg.get("oversample"))  # the training batches; errors and NC use x, y
    batches = TensorBatches(xs, ys, batch_size=cfg["batch_size"], seed=cfg["seed"])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg["epochs"], initial=start_epoch - 1, desc=run.label or "train", unit="ep")
    save_every, last_save = checkpoint_seconds(), time.monotonic()
    eval_every = cfg.get("train_eval_every") or 1
    done_here, test_err = 0, next((r["test_error"] for r in reversed(history)
                                   if not math.isnan(r["test_error"])), math.nan)
    for epoch in range(start_epoch, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        model.train()
        lr = opt.param_groups[0]["lr"]
        for xb, yb in batches.epoch(epoch):
            with _autocast(device, amp):
                loss = F.cross_entropy(step_model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {float(loss.detach())}); "
                                     f"lower config['lr'] = {cfg['lr']}")
        # The training error every `train_eval_every` epochs (default every epoch), at every snapshot
        # and at the last epoch; evaluation does not touch the weights or the batch order, so skipping
        # it leaves training bit for bit the same and only coarsens the history (NaN rows).
        if epoch % eval_every == 0 or epoch in snapshots or epoch == cfg["epochs"]:
            err, tr_loss, _, _ = _evaluate(model, x, y, k, device, amp, keep_features=False)
        else:
            err, tr_loss = math.nan, math.nan
        row = {"epoch": epoch, "lr": lr, "train_error": err, "test_error": math.nan,
               "train_loss": tr_loss, "test_loss": math.nan}
        if epoch in snapshots or (err == 0.0 and tpt is None):  # test set and NC metrics
            row["test_error"], row["test_loss"], _, _ = _evaluate(model, xt, yt, k, device, amp,
                                                                  keep_features=False)
            _, _, stats, feats = _evaluate(model, x, y, k, device, amp, keep_features=True)
            row.update(_nc_snapshot(model, stats, feats))
            del stats, feats
            test_err = row["test_error"]
        tpt = epoch if (err == 0.0 and tpt is None) else tpt
        wall += time.perf_counter() - t0
        row["epoch_seconds"] = time.perf_counter() - t0
        history.append(row)
        done_here += 1
        stop = stop_after is not None and done_here >= stop_after and epoch < cfg["epochs"]
        if stop or epoch == cfg["epochs"] or time.monotonic() - last_save >= save_every:
            save_checkpoint(ckpt_path, {"epoch": epoch, "model": model.state_dict(),
                                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                        "history": history, "wall_seconds": wall, "config_hash": key})
            last_save = time.monotonic()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{tr_loss:.3g}", train_err=f"{err:.3g}", test_err=f"{test_err:.3g}")
        if stop:
            break
    if bar is not None:
        bar.close()
    run.save_table("history", [{c: r.get(c, math.nan) for c in HISTORY_COLUMNS} for r in history])
    last = history[-1]
    return {"complete": last["epoch"] == cfg["epochs"], "epochs_done": last["epoch"],
            "tpt_epoch": tpt, "final_train_error": last["train_error"],
            "final_test_error": last["test_error"], "wall_seconds": wall,
            "train_samples": len(y), "test_samples": len(yt),
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in params)}


def variant_label(dataset: str, arch: str, seed: int, variant: dict | None = None,
                  lr: float | None = None) -> str:
    """The run label: ``dataset-arch-s<seed>`` (``dataset-arch-lr<lr>-s<seed>`` for a run of a
    learning-rate sweep), or ``dataset-<classifier>-d<feature_dim>-s<seed>`` for a variant of an
    experiment with ``variants`` (chapter 3)."""
    if not variant:
        return f"{dataset}-{arch}-" + (f"lr{lr:.4g}-" if lr is not None else "") + f"s{seed}"
    return f"{dataset}-{variant['classifier']}-d{variant.get('feature_dim') or 'default'}-s{seed}"


def _sweep_lrs(exp: dict, dataset: str, arch: str):
    """The learning rates the preset sweeps for ``(dataset, arch)``, or None (no sweep)."""
    lrs = (exp.get("lr_sweep") or {}).get(f"{dataset}:{arch}")
    return None if lrs is None else tuple(lrs)


def best_by_test_error(sweep: dict):
    """The learning rate of a sweep ``{lr: Run}`` with the lowest final test error (ties: the
    smaller lr), as Papyan et al. chose theirs. Incomplete runs are ignored."""
    done = {lr: run.info["summary"]["final_test_error"] for lr, run in sweep.items() if run.complete}
    if not done:
        raise ValueError("no run of the learning-rate sweep is complete")
    return min(done, key=lambda lr: (done[lr], lr))


def planned_runs(experiment: str, preset: str, seed: int = 0) -> list[dict]:
    """Every training run of ``experiment`` at ``preset`` for one ``seed``, in the order
    :func:`run_experiment` trains them. Each is a dict: ``pair`` (dataset, arch), ``key`` (its key
    in :func:`run_experiment`'s result), ``lr`` (its rate in the pair's lr sweep, else None),
    ``label`` and ``config`` (the run config, as hashed). The run manifest (:mod:`ncutils.jobs`)
    enumerates these too, so the two cannot drift apart.
    """
    exp = _config.get_preset(experiment, preset)
    variants = exp.pop("variants", None)
    exp.pop("memory", None)
    out = []
    for dataset in exp["datasets"]:
        for arch in exp["archs"]:
            grid = _sweep_lrs(exp, dataset, arch)
            if grid is not None:
                out += [{"pair": (dataset, arch), "key": (dataset, arch), "lr": lr,
                         "label": variant_label(dataset, arch, seed, lr=lr),
                         "config": run_config(exp, dataset, arch, seed, lr=lr)} for lr in grid]
                continue
            for i, variant in enumerate(variants or [None]):
                out.append({"pair": (dataset, arch), "key": (dataset, arch) if variants is None else (dataset, arch, i),
                            "lr": None, "label": variant_label(dataset, arch, seed, variant),
                            "config": run_config(exp, dataset, arch, seed, **(variant or {}))})
    return out


def run_experiment(experiment: str, preset: str, seed: int = 0, force: bool = False, device=None,
                   progress: bool | None = None, only: tuple | None = None,
                   lrs: tuple | None = None) -> dict:
    """Load or train every run of an experiment preset; ``{(dataset, arch): Run}``, or
    ``{(dataset, arch, variant_index): Run}`` when the preset lists ``variants`` (overrides of the
    run config, e.g. a fixed-ETF classifier).

    When the preset's ``lr_sweep`` lists learning rates for ``"dataset:arch"``, that pair is trained
    at each of them and its entry is the run with the lowest final test error (see
    :func:`lr_sweep`); ``lrs`` restricts which of the sweep's rates are trained by this call (to
    spread a sweep over processes); the pair's entry is then left out until the whole sweep is
    complete. Runs whose results are committed are loaded, never retrained (unless ``force``, a
    bool: see :func:`ncutils.store.load_or_run`); an interrupted run resumes from its checkpoint.
    ``only``: the ``(dataset, arch)`` pairs to run; a pair that is not in the preset is an error.
    The runs are those of :func:`planned_runs`.
    """
    force, seed = checks.check_bool(force, "force"), checks.check_seed(seed, "seed")
    plan = planned_runs(experiment, preset, seed)
    pairs = list(dict.fromkeys(p["pair"] for p in plan))
    if only is not None:
        unknown = [p for p in only if not isinstance(p, (tuple, list)) or tuple(p) not in pairs]
        if unknown or not only:
            raise ValueError(f"only={list(only)!r} names no run of {experiment!r} at {preset!r} "
                             f"({unknown or 'none given'} matched nothing); valid choices: "
                             f"{', '.join(':'.join(p) for p in pairs)}")
    runs, swept = {}, set()
    for p in plan:
        dataset, arch = p["pair"]
        if only is not None and (dataset, arch) not in [tuple(q) for q in only]:
            continue
        if p["lr"] is not None:
            if p["pair"] in swept:
                continue  # the whole sweep of the pair was handled at its first run
            swept.add(p["pair"])
            sweep = lr_sweep(experiment, preset, dataset, arch, seed=seed, force=force, device=device,
                             progress=progress, lrs=lrs)
            if all(run.complete for run in sweep.values()) and lrs is None:
                runs[p["key"]] = sweep[best_by_test_error(sweep)]
            continue
        cfg = p["config"]
        runs[p["key"]] = load_or_run(
            experiment, preset, cfg, lambda r, c=cfg: train(r, c, device=device, progress=progress),
            label=p["label"], force=force, device=device)
    return runs


def lr_sweep(experiment: str, preset: str, dataset: str, arch: str, seed: int = 0, force: bool = False,
             device=None, progress: bool | None = None, lrs: tuple | None = None) -> dict:
    """Load or train the learning-rate sweep of ``(dataset, arch)``: ``{lr: Run}`` in grid order.

    The runs differ from one another only in ``lr``. ``lrs`` (a subset of the sweep's rates)
    trains only those; the others are returned as they are (possibly incomplete).
    """
    sweep = [p for p in planned_runs(experiment, preset, seed)
             if p["pair"] == (dataset, arch) and p["lr"] is not None]
    if not sweep:
        exp = _config.get_preset(experiment, preset)
        raise ValueError(f"the {preset!r} preset of {experiment!r} has no lr_sweep for "
                         f"{dataset}:{arch} (it sweeps {sorted(exp.get('lr_sweep') or {})})")
    grid = [p["lr"] for p in sweep]
    if lrs is not None:
        missing = [lr for lr in lrs if not any(math.isclose(lr, g, rel_tol=1e-3) for g in grid)]
        if missing:
            raise ValueError(f"lrs={missing!r} are not in the sweep {list(grid)} of {dataset}:{arch}")
    out = {}
    for p in sweep:
        lr, cfg, label = p["lr"], p["config"], p["label"]
        chosen = lrs is None or any(math.isclose(lr, x, rel_tol=1e-3) for x in lrs)
        if chosen:
            out[lr] = load_or_run(experiment, preset, cfg,
                                  lambda r, c=cfg: train(r, c, device=device, progress=progress),
                                  label=label, force=force, device=device)
        else:
            out[lr] = Run(experiment, preset, cfg, label)
    return out


# The NC quantities whose fold change within the terminal phase chapter 1 reports.
NC_FOLD_KEYS = ("nc1", "equinorm_means", "equinorm_classifiers", "equiangular_means",
                "equiangular_classifiers", "maxangle_means", "maxangle_classifiers", "self_duality")


def tpt_summary(history, steps_per_epoch: int | None = None) -> dict:
    """Terminal-phase figures of one run's history (a DataFrame with the HISTORY_COLUMNS).

    ``tpt_epoch`` is the onset as Papyan et al. define it: the first epoch with zero training error
    (the loop always takes a snapshot then). ``tpt_stable_epoch`` is the first epoch from which the
    training error *stays* zero to the end (None if the last epoch errs; with
    ``train_eval_every`` > 1 both are read from the evaluated epochs only), and ``tpt_start`` the
    first snapshot at or after it: every "within TPT" figure (``nc1_drop`` and ``fold_<key>``, the
    value at ``tpt_start`` over the value at the end) is measured from there, in a phase where the
    training error is zero throughout. ``steps_high_lr_in_tpt`` counts the SGD steps taken at the
    initial learning rate from ``tpt_stable_epoch`` on (needs ``steps_per_epoch``).
    """
    import numpy as np

    last = history.iloc[-1]
    # epochs whose training error was evaluated (all of them unless config["train_eval_every"] > 1)
    evaluated = history.dropna(subset=["train_error"])
    epochs = evaluated["epoch"].to_numpy()
    zero = evaluated["train_error"].to_numpy() == 0.0
    snaps = history.dropna(subset=["nc1"]).set_index("epoch")
    out = {"epochs": int(last["epoch"]), "tpt_epoch": None, "tpt_stable_epoch": None, "tpt_start": None,
           "nc1_first": float(snaps["nc1"].iloc[0]), "nc1_at_tpt": math.nan, "nc1_at_start": math.nan,
           "nc1_end": float(snaps["nc1"].iloc[-1]),
           "ncc_mismatch_end": float(snaps["ncc_mismatch"].iloc[-1]),
           "test_acc_at_tpt": math.nan, "test_acc_at_start": math.nan,
           "test_acc_end": 1.0 - float(snaps["test_error"].iloc[-1]),
           "train_error_end": float(last["train_error"]), "steps_high_lr_in_tpt": None,
           **{f"fold_{k}": math.nan for k in NC_FOLD_KEYS}}
    if zero.any():
        onset = int(epochs[np.argmax(zero)])
        out.update(tpt_epoch=onset, nc1_at_tpt=float(snaps.loc[onset, "nc1"]),
                   test_acc_at_tpt=1.0 - float(snaps.loc[onset, "test_error"]))
    if zero[-1]:
        nonzero = np.flatnonzero(~zero)
        stable = int(epochs[nonzero[-1] + 1]) if len(nonzero) else int(epochs[0])
        start = int(snaps.index[snaps.index >= stable][0])
        out.update(tpt_stable_epoch=stable, tpt_start=start, nc1_at_start=float(snaps.loc[start, "nc1"]),
                   test_acc_at_start=1.0 - float(snaps.loc[start, "test_error"]))
        out.update({f"fold_{k}": float(snaps.loc[start, k] / snaps[k].iloc[-1]) for k in NC_FOLD_KEYS})
        if steps_per_epoch is not None:
            lr, all_epochs = history["lr"].to_numpy(), history["epoch"].to_numpy()
            high = (all_epochs >= stable) & np.isclose(lr, lr[0])
            out["steps_high_lr_in_tpt"] = int(high.sum()) * int(steps_per_epoch)
    out["nc1_drop"] = out["fold_nc1"]
    return out
