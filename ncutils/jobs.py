"""The run manifest: every independent run of every chapter at a preset, as :class:`Job` records.

A chapter's runs are independent of one another and keyed by their config hash, so a book rerun
can fan out over processes, GPUs, a Slurm cluster or a CI matrix with no coordination of its own:
each :class:`Job` knows its experiment, preset, label, run config and hash, whether its results
are complete, a rough cost, and how to run itself through :func:`ncutils.store.load_or_run`
(resuming from its checkpoint, so a requeued job continues where it stopped).

The jobs of an experiment come from the same functions the chapters call
(:func:`ncutils.train.planned_runs`, :func:`ncutils.seg.planned_runs`,
:func:`ncutils.memory.memory_config`, :func:`ncutils.ufm.landscape_config`), so the manifest and
the chapters cannot drift apart (``tests/test_jobs.py`` checks the hashes). A new experiment
registers its enumerator in one line (see the end of this module)::

    register("minority_collapse", "05", classification_jobs)

An enumerator is ``fn(experiment, preset) -> list[Job]``; a preset's ``seeds`` are enumerated.

Costs are estimates in GPU hours on one A100/H100-class GPU, from the FLOPs of the run's model
(counted by ``torch.utils.flop_counter`` on one input) and the stated throughput constants below;
read them as an order of magnitude, not a measurement.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from . import config as _config
from . import store

__all__ = ["Job", "register", "registered", "experiment_jobs", "all_jobs", "find_job", "merge_results",
           "classification_jobs", "memory_jobs", "landscape_jobs", "segmentation_jobs", "ceco_jobs", "minority_jobs",
           "ood_jobs", "chapter_totals",
           "GPU_BF16_FLOPS", "GPU_FP32_FLOPS", "GPU_FP64_FLOPS", "CPU_FLOPS", "STEP_OVERHEAD_S"]

# Throughput assumed by the cost estimates (sustained, not peak): one A100/H100-class GPU.
GPU_BF16_FLOPS = 50e12  # classification: bf16 autocast + channels_last (about a quarter of peak)
GPU_FP32_FLOPS = 15e12  # segmentation runs in float32 (TF32 matmuls where enabled)
GPU_FP64_FLOPS = 5e12  # the UFM solver works in float64
CPU_FLOPS = 1e11  # a memory measurement on the CPU (a few training steps)
STEP_OVERHEAD_S = 4e-3  # per SGD step: kernel launches, optimizer, Python
EVAL_BATCH_OVERHEAD_S = 1e-3  # per evaluation batch
SOLVER_ITER_OVERHEAD_S = 1e-3  # per UFM solver iteration: launches and host syncs
LBFGS_ITERS = 1000  # assumed L-BFGS iterations per UFM fit (its cap is 10,000)

# Image datasets: input shape, classes, train images after balancing (None n_per_class), test images.
_IMAGE_DATA = {"mnist": ((1, 28, 28), 10, 5421 * 10, 10_000),  # MNIST's smallest class has 5,421
               "fashionmnist": ((1, 28, 28), 10, 6000 * 10, 10_000)}
_CAMVID_FRAMES = {"train": 367, "val": 101, "test": 233}
_CAMVID_SHAPE = (3, 180, 240)

# ----------------------------------------------------------------------------------------- jobs


@dataclasses.dataclass
class Job:
    """One independent run: what :func:`ncutils.store.load_or_run` needs, plus how to run it.

    ``kind`` names the function that computes the run (a key of ``_RUNNERS``); ``device`` is the
    device the run must use (the memory measurements: ``"cpu"`` or ``"cuda"``), None for any (a
    GPU when there is one); ``group`` names the sweep a run belongs to, if any.
    """

    experiment: str
    preset: str
    label: str
    config: dict
    kind: str
    chapter: str = ""
    group: str = ""
    device: Optional[str] = None
    source: str = ""  # the registered experiment that lists the job (its runs may be stored under another)

    def __post_init__(self):
        if self.kind not in _RUNNERS:
            raise ValueError(f"kind must be one of {sorted(_RUNNERS)}, got {self.kind!r}")
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be None, 'cpu' or 'cuda', got {self.device!r}")

    @property
    def run(self) -> store.Run:
        return store.Run(self.experiment, self.preset, self.config, self.label)

    @property
    def key(self) -> str:
        """The config hash: the run's folder name ends in it."""
        return self.run.key

    @property
    def complete(self) -> bool:
        return self.run.complete

    def resume_epoch(self) -> Optional[int]:
        """The last epoch of the run's checkpoint (a training run interrupted), or None."""
        path = self.run.path / "checkpoint.pt"
        if self.kind not in ("train", "segment", "minority", "ood") or not path.is_file():
            return None
        from .train import load_checkpoint

        return int(load_checkpoint(path)["epoch"])

    def execute(self, device=None, progress: Optional[bool] = False, force: bool = False) -> store.Run:
        """Load the run if complete, else compute it (resuming from its checkpoint); the Run."""
        device = self.device or device
        runner = _RUNNERS[self.kind]
        return store.load_or_run(self.experiment, self.preset, self.config,
                                 lambda r: runner(r, self.config, device, progress),
                                 label=self.label, force=force, device=device)

    def gpu_hours(self) -> float:
        """A rough cost: hours on one GPU (the CPU for a ``device="cpu"`` job)."""
        return _COSTS[self.kind](self) / 3600.0

    def record(self, with_config: bool = False) -> dict:
        """One JSON-able line of ``--list``."""
        out = {"experiment": self.experiment, "source": self.source or self.experiment,
               "preset": self.preset, "chapter": self.chapter,
               "label": self.label, "hash": self.key, "kind": self.kind, "group": self.group,
               "device": self.device or "any", "complete": self.complete,
               "est_hours": round(self.gpu_hours(), 4)}
        if out["complete"]:
            out["wall_seconds"] = self.run.info.get("wall_seconds")
        if with_config:
            out["config"] = _config_json(self.config)
        return out


def _config_json(cfg: dict) -> dict:
    return json.loads(json.dumps(cfg, default=float))


# -------------------------------------------------------------------------------------- runners


def _train(run, cfg, device, progress):
    from .train import train

    return train(run, cfg, device=device, progress=progress)


def _segment(run, cfg, device, progress):
    from .seg import train_segmentation

    return train_segmentation(run, cfg, device=device, progress=progress)


def _landscape(run, cfg, device, progress):
    import torch

    from .ufm import landscape_experiment

    return landscape_experiment(run, cfg, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _memory(run, cfg, device, progress):
    from .memory import measure_run

    return measure_run(run, cfg, progress=bool(progress))


def _minority(run, cfg, device, progress):
    from .minority import train_and_measure

    return train_and_measure(run, cfg, device=device, progress=progress)


def _lpm(run, cfg, device, progress):
    from .lpm import model_experiment

    return model_experiment(run, cfg)


def _ood(run, cfg, device, progress):
    from .ood_train import train_ood

    return train_ood(run, cfg, device=device, progress=progress)


_RUNNERS: dict[str, Callable] = {"train": _train, "segment": _segment, "landscape": _landscape,
                                 "memory": _memory, "minority": _minority, "lpm": _lpm, "ood": _ood}

# ---------------------------------------------------------------------------------- enumerators


def classification_jobs(experiment: str, preset: str) -> list[Job]:
    """The training runs of :func:`ncutils.train.run_experiment`, for every seed of the preset's
    ``seeds`` (default: seed 0), lr sweeps included."""
    from .train import planned_runs

    jobs = []
    for seed in _config.get_preset(experiment, preset).get("seeds", (0,)):
        for p in planned_runs(experiment, preset, seed):
            group = f"lr sweep {':'.join(p['pair'])}" if p["lr"] is not None else ""
            jobs.append(Job(experiment, preset, p["label"], p["config"], "train", group=group))
    return jobs


def memory_jobs(experiment: str, preset: str) -> list[Job]:
    """Chapter 3's memory measurements (:func:`ncutils.memory.measure_preset`): CPU and GPU."""
    from .memory import EXPERIMENT, memory_config, memory_label

    if experiment != EXPERIMENT:
        raise ValueError(f"memory measurements belong to {EXPERIMENT!r}, not {experiment!r}")
    return [Job(experiment, preset, memory_label(dev), memory_config(preset, dev), "memory", device=dev)
            for dev in ("cpu", "cuda")]


def landscape_jobs(experiment: str, preset: str) -> list[Job]:
    """Chapter 2's one landscape run (:func:`ncutils.ufm.run_landscape`) per seed (default 0)."""
    from .ufm import LANDSCAPE_LABEL, landscape_config

    return [Job(experiment, preset, LANDSCAPE_LABEL, landscape_config(preset, seed), "landscape")
            for seed in _config.get_preset(experiment, preset).get("seeds", (0,))]


def segmentation_jobs(experiment: str, preset: str) -> list[Job]:
    """Chapter 4's variants x seeds and its lambda sweep (:func:`ncutils.seg.run_segmentation`)."""
    from .seg import planned_runs

    exp = _config.get_preset(experiment, preset)
    jobs = [Job(experiment, preset, p["label"], p["config"], "segment") for p in planned_runs(preset)]
    if exp.get("lambda_sweep"):
        jobs += [Job(experiment, preset, p["label"], p["config"], "segment", group="lambda sweep")
                 for p in planned_runs(preset, sweep=True)]
    return jobs


def ceco_jobs(experiment: str, preset: str) -> list[Job]:
    """The ``camvid_ceco`` study (:func:`ncutils.ceco.run_ceco`): its runs are stored under
    ``camvid_cr``, and those equal to a ``camvid_cr`` run are that run (listed once by
    :func:`all_jobs`)."""
    from .ceco import STORE_EXPERIMENT, ceco_variant_configs

    return [Job(STORE_EXPERIMENT, preset, f"{label}-s{seed}", cfg, "segment", group=f"ceco {name}")
            for name, label, seed, cfg in ceco_variant_configs(preset)]


def minority_jobs(experiment: str, preset: str) -> list[Job]:
    """Chapter 5: the Layer-Peeled Model sweep (CPU), every network run at seed 0 and the remedy
    runs at the other seeds (:func:`ncutils.minority.run_model`, :func:`~ncutils.minority.run_networks`,
    :func:`~ncutils.minority.run_remedy_seeds`)."""
    from .minority import network_configs, remedy_seed_configs

    model = _config.get_preset(experiment, preset)["model"]
    jobs = [Job(experiment, preset, "model", model, "lpm", device="cpu")]
    jobs += [Job(experiment, preset, label, cfg, "minority", group=f"{d}:{a}")
             for (d, a, _), (label, cfg) in network_configs(preset, 0).items()]
    jobs += [Job(experiment, preset, label, cfg, "minority", group=f"{d}:{a}")
             for (d, a, _, seed), (label, cfg) in remedy_seed_configs(preset).items() if seed != 0]
    return jobs


def ood_jobs(experiment: str, preset: str) -> list[Job]:
    """Chapter 6: every arm x seed (:func:`ncutils.ood_train.run_nc_ood`)."""
    from .ood_train import arm_label

    exp = _config.get_preset(experiment, preset)
    arms, seeds = exp.pop("arms"), exp.pop("seeds")
    return [Job(experiment, preset, arm_label(arm, seed),
                {**exp, **{k: v for k, v in arm.items() if k != "name"}, "seed": seed}, "ood")
            for seed in seeds for arm in arms]


# ------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, tuple[str, Callable]] = {}


def register(experiment: str, chapter: str, enumerate_fn: Callable[[str, str], list]) -> None:
    """Register the enumerator of ``experiment`` (``fn(experiment, preset) -> list[Job]``),
    whose runs chapter ``chapter`` (e.g. ``"05"``) shows."""
    if not (isinstance(chapter, str) and len(chapter) == 2 and chapter.isdigit()):
        raise ValueError(f"chapter must be a two-digit string such as '05', got {chapter!r}")
    _REGISTRY[experiment] = (chapter, enumerate_fn)


def registered() -> dict[str, str]:
    """``{experiment: chapter}`` of every registered experiment, in chapter order."""
    return dict(sorted(((e, c) for e, (c, _) in _REGISTRY.items()), key=lambda t: (t[1], t[0])))


def experiment_jobs(experiment: str, preset: str) -> list[Job]:
    """Every independent run of ``experiment`` at ``preset``, in the order its chapter loads them."""
    if experiment not in _REGISTRY:
        raise ValueError(f"experiment must be one of {sorted(_REGISTRY)} (registered in "
                         f"ncutils.jobs), got {experiment!r}")
    chapter, fn = _REGISTRY[experiment]
    _config.get_preset(experiment, preset)  # a clear error for an unknown preset
    jobs = [dataclasses.replace(job, chapter=chapter, source=experiment) for job in fn(experiment, preset)]
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"the enumerator of {experiment!r} lists runs {dup} twice at preset {preset!r}")
    return jobs


def all_jobs(preset: str, experiments: Optional[Iterable[str]] = None) -> list[Job]:
    """The jobs of every registered experiment (or of ``experiments``) at ``preset``."""
    names = list(registered()) if experiments is None else list(experiments)
    out, seen = [], set()
    for job in (job for name in names for job in experiment_jobs(name, preset)):
        if job.run.path not in seen:  # a study may reuse another's runs (camvid_ceco: camvid_cr's)
            seen.add(job.run.path)
            out.append(job)
    return out


def find_job(key: str, preset: str, experiments: Optional[Iterable[str]] = None) -> Job:
    """The job whose config hash is ``key`` (or starts with it, when unique)."""
    matches = [job for job in all_jobs(preset, experiments) if job.key.startswith(key)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        raise ValueError(f"--run {key!r} matches {what} of preset {preset!r}"
                         f"{'' if experiments is None else ' in ' + ', '.join(experiments)}; "
                         "see --list for the hashes")
    return matches[0]


def chapter_totals(jobs: Sequence[Job]) -> list[dict]:
    """Per chapter: runs, runs complete, estimated GPU hours (the CPU-only jobs apart)."""
    out: dict[str, dict] = {}
    for job in jobs:
        row = out.setdefault(job.chapter, {"chapter": job.chapter, "experiments": [], "runs": 0,
                                           "complete": 0, "gpu_hours": 0.0, "cpu_hours": 0.0})
        if (job.source or job.experiment) not in row["experiments"]:
            row["experiments"].append(job.source or job.experiment)
        row["runs"] += 1
        row["complete"] += int(job.complete)
        row["cpu_hours" if job.device == "cpu" else "gpu_hours"] += job.gpu_hours()
    return [out[c] for c in sorted(out)]


# ---------------------------------------------------------------------------------------- merge


def merge_results(sources: Sequence[Path | str], dest: Path | str) -> dict:
    """Copy every complete run under the results roots ``sources`` into the root ``dest``.

    Runs are hash-keyed folders (``<experiment>/<preset>-<label>-<hash>``), so runs made by
    separate jobs never collide. A run already complete in ``dest`` is kept (listed under
    ``kept``); a source folder whose ``run.json`` does not match its name, or an incomplete run,
    is not copied (``incomplete``). Checkpoints and temporary files are left out; each run is
    copied into a temporary folder and renamed into place, so ``dest`` never holds half a run.
    Returns ``{"copied": [...], "kept": [...], "incomplete": [...]}`` (paths relative to dest).
    """
    dest = Path(dest)
    report = {"copied": [], "kept": [], "incomplete": []}
    for source in map(Path, sources):
        if not source.is_dir():
            raise FileNotFoundError(f"results folder {source} does not exist")
        for run_dir in sorted(p for p in source.glob("*/*") if p.is_dir()):
            rel = run_dir.relative_to(source)
            info_file = run_dir / "run.json"
            if not info_file.is_file():
                report["incomplete"].append(str(rel))
                continue
            info = json.loads(info_file.read_text())
            expected = store.Run(info["experiment"], info["preset"], info["config"], info.get("label", ""),
                                 root=source)
            if expected.path != run_dir:
                raise ValueError(f"{info_file} does not match its folder (its config hashes to "
                                 f"{expected.path.name}); it cannot be merged")
            target = dest / rel
            if (target / "run.json").is_file():
                report["kept"].append(str(rel))
                continue
            tmp = target.with_name(target.name + ".merging")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(run_dir, tmp, ignore=shutil.ignore_patterns("checkpoint.pt", "*.tmp"))
            if target.exists():  # an incomplete run (a checkpoint) of the same config: replaced
                shutil.rmtree(target)
            tmp.rename(target)
            report["copied"].append(str(rel))
    return report


# ---------------------------------------------------------------------------------------- costs


@functools.lru_cache(maxsize=64)
def _forward_flops(builder: str, key: str) -> float:
    """FLOPs of one forward pass of one input (batch of 2, halved), counted by torch on the meta
    device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    spec = json.loads(key)
    if builder == "classifier":
        from .models import build_model

        c, h, w = spec["shape"]
        model = build_model(spec["arch"], num_classes=spec["classes"], in_channels=c, input_size=h,
                            width=spec["width"], feature_dim=spec["feature_dim"],
                            classifier=spec["classifier"], etf_bias=spec["etf_bias"])
    elif builder == "ood":
        from .ood_model import build_ood_model

        c, h, w = spec["shape"]
        model = build_ood_model(spec["arch"], spec["classes"], width=spec["width"], projector=spec["projector"],
                                hidden_mult=spec["hidden_mult"], in_channels=c, input_size=h)
    else:
        from .seg import build_seg_model

        c, h, w = spec["shape"]
        model = build_seg_model(spec["cfg"], spec["classes"])
    model = model.eval().to("meta")  # shapes only: counting needs no arithmetic
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(2, c, h, w, device="meta"))
    return counter.get_total_flops() / 2


def _classifier_seconds(job: Job) -> float:
    from .train import snapshot_set

    cfg = job.config
    shape, classes, n_full, n_test_full = _IMAGE_DATA[cfg["dataset"]]
    if cfg.get("counts") is not None:
        n_train = sum(cfg["counts"])
    else:
        n_train = n_full if cfg.get("n_per_class") is None else cfg["n_per_class"] * classes
    n_test = n_test_full if cfg.get("test_per_class") in (None, "all") else cfg["test_per_class"] * classes
    flops = _forward_flops("classifier", json.dumps(
        {"arch": cfg["arch"], "classes": classes, "shape": shape, "width": cfg.get("width"),
         "feature_dim": cfg.get("feature_dim"), "classifier": cfg.get("classifier", "learned"),
         "etf_bias": cfg.get("etf_bias", False)}, sort_keys=True))
    epochs, snaps = cfg["epochs"], len(snapshot_set(cfg)) + 1  # + 1: the onset of the terminal phase
    images = 3 * n_train * epochs + n_train * epochs + (n_train + n_test) * snaps  # fwd + bwd = 3 fwd
    steps = math.ceil(n_train / cfg["batch_size"]) * epochs
    eval_batches = math.ceil(n_train / 1024) * epochs + (math.ceil(n_train / 1024) + math.ceil(n_test / 1024)) * snaps
    return images * flops / GPU_BF16_FLOPS + steps * STEP_OVERHEAD_S + eval_batches * EVAL_BATCH_OVERHEAD_S


def _segment_seconds(job: Job) -> float:
    cfg = job.config
    n_train = cfg["n_train"] or _CAMVID_FRAMES["train"]
    n_val = min(cfg["n_eval"] or _CAMVID_FRAMES["val"], _CAMVID_FRAMES["val"])
    n_test = min(cfg["n_eval"] or _CAMVID_FRAMES["test"], _CAMVID_FRAMES["test"])
    model_cfg = {**{k: cfg[k] for k in ("widths", "feature_dim", "cr_dim", "cr_weight", "cr_frozen")}, "seed": 0}
    full = _forward_flops("seg", json.dumps({"cfg": model_cfg, "classes": 11, "shape": _CAMVID_SHAPE},
                                            sort_keys=True))
    crop = cfg.get("crop")
    train_flops = full if crop is None else full * (crop[0] * crop[1]) / (_CAMVID_SHAPE[1] * _CAMVID_SHAPE[2])
    epochs = cfg["epochs"]
    evals = len({e for e in range(1, epochs + 1) if e % cfg["eval_every"] == 0} | {epochs})
    passes = 2 * (2 if cfg.get("cr_weight", 0) > 0 else 1)  # ncc: two passes; the CR branch: again
    flops = 3 * train_flops * n_train * epochs + full * (n_val * evals + passes * (n_train + n_test))
    steps = math.ceil(n_train / cfg["batch_size"]) * epochs
    return flops / GPU_FP32_FLOPS + steps * STEP_OVERHEAD_S + (n_val * evals / 8) * EVAL_BATCH_OVERHEAD_S


def _landscape_seconds(job: Job) -> float:
    """An estimate from the solver's iteration caps (gradient descent runs to its cap) and
    ``LBFGS_ITERS`` per L-BFGS fit (about 1.5 evaluations an iteration)."""
    cfg = job.config
    K, n, d = cfg["K"], cfg["n"], cfg["d"]

    def fits(count, iters, k, m, dim, evals=1.0):
        return count * iters * (SOLVER_ITER_OVERHEAD_S + evals * 6.0 * k * k * m * dim / GPU_FP64_FLOPS)

    gd = cfg["gd_max_iter"]
    h, lz = cfg["hess"], cfg["lanczos"]
    total = fits(len(cfg["path_init_scales"]) * cfg["path_seeds"] + cfg["gd_seeds"], gd, K, n, d)
    total += fits(len(cfg["sweep_kc"]) * len(cfg["sweep_ratios"]) + cfg["n_seeds"], LBFGS_ITERS, K, n, d, 1.5)
    total += fits(8, LBFGS_ITERS, h["K"], h["n"], h["d"], 1.5)  # global and critical points
    total += fits(2, LBFGS_ITERS, lz["K"], lz["n"], lz["d"], 1.5) + fits(3, 300, lz["K"], lz["n"], lz["d"], 2)
    total += sum(fits(cfg["dim_seeds"], LBFGS_ITERS, K, n, dim, 1.5) for dim in cfg["dims"])
    total += 2 * cfg["slice_points"] ** 2 * SOLVER_ITER_OVERHEAD_S
    return total


def _memory_seconds(job: Job) -> float:
    cfg = job.config
    flops = 0.0
    for c, size in cfg["inputs"]:
        for v in cfg["variants"]:
            f = _forward_flops("classifier", json.dumps(
                {"arch": cfg["arch"], "classes": cfg["num_classes"], "shape": [c, size, size],
                 "width": cfg["width"], "feature_dim": v.get("feature_dim"),
                 "classifier": v.get("classifier", "learned"), "etf_bias": False}, sort_keys=True))
            flops += (3 * f * sum(cfg["batch_sizes"]) * (cfg["warmup_steps"] + 2)  # + counted step + repeat
                      * len(cfg.get("stems", ("cifar",))))
    return flops / (CPU_FLOPS if cfg["device"] == "cpu" else GPU_FP32_FLOPS)


def _ood_seconds(job: Job) -> float:
    """Training (AdamW, bf16 not used: float32) plus the per-layer analysis: one forward pass over
    every split (ID, near and far OOD, train and test); the probes (scikit-learn, CPU) not counted."""
    cfg = job.config
    k = len(cfg["id_classes"])
    per = lambda n, classes, full: full if n is None else n * classes  # noqa: E731
    n_train = per(cfg["n_per_class"], k, 6000 * k)
    images = (n_train + per(cfg["test_per_class"], k, 1000 * k)
              + 2 * per(cfg["probe_train_per_class"], 10 - k, 6000 * (10 - k))
              + 2 * per(cfg["probe_test_per_class"], 10 - k, 1000 * (10 - k)))
    flops = _forward_flops("ood", json.dumps({"arch": cfg["arch"], "classes": k, "shape": [1, 28, 28],
                                              "width": cfg["width"], "projector": cfg["projector"],
                                              "hidden_mult": cfg["hidden_mult"]}, sort_keys=True))
    steps = math.ceil(n_train / cfg["batch_size"]) * cfg["epochs"]
    return (3 * n_train * cfg["epochs"] + images) * flops / GPU_FP32_FLOPS + steps * STEP_OVERHEAD_S


def _lpm_seconds(job: Job) -> float:
    """CPU: the first-order solver's iteration cap at every check ratio and restart (tiny problems,
    overhead-bound) plus one convex solve (about 0.1 s) per ratio and bisection step."""
    cfg = job.config
    fo = len(cfg["check_ratios"]) * cfg["fo_restarts"] * cfg["fo_max_iter"] * 1e-4
    return fo + 0.1 * (len(cfg["ratios"]) + len(cfg["check_ratios"]) + 30)


_COSTS: dict[str, Callable[[Job], float]] = {"train": _classifier_seconds, "segment": _segment_seconds,
                                             "landscape": _landscape_seconds, "memory": _memory_seconds,
                                             "minority": _classifier_seconds, "lpm": _lpm_seconds,
                                             "ood": _ood_seconds}

# --------------------------------------------------------------- the book's experiments (one line each)

register("terminal_phase", "01", classification_jobs)
register("ufm", "02", landscape_jobs)
register("fixed_etf", "03", lambda experiment, preset: (classification_jobs(experiment, preset)
                                                         + memory_jobs(experiment, preset)))
register("camvid_cr", "04", segmentation_jobs)
register("minority_collapse", "05", minority_jobs)
register("nc_ood", "06", ood_jobs)
register("camvid_ceco", "04", ceco_jobs)
