"""Results keyed by a config hash, with provenance; load-or-run; atomic writes.

A run lives in ``<results root>/<experiment>/<preset>-<label>-<hash>/`` and holds tables (CSV),
arrays (NPZ) and ``run.json``: the config, preset, provenance (git commit, device, versions) and
wall seconds. ``run.json`` is written last, so its presence marks a complete run; building the book
loads complete runs and never retrains them. ``smoke`` runs are git-ignored; ``cpu`` and ``paper``
runs are committed. The results root is ``$NCUTILS_RESULTS`` or ``<project root>/data/results``.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .config import PRESET_NAMES, config_hash
from .data import project_root

__all__ = ["project_root", "results_root", "atomic_write", "Run", "open_run", "load_or_run",
           "provenance", "device_name", "list_runs"]


def results_root() -> Path:
    env = os.environ.get("NCUTILS_RESULTS")
    return Path(env).expanduser() if env else project_root() / "data" / "results"


def atomic_write(path: Path | str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=project_root(),
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "ncutils"],
                               cwd=project_root(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device_name(device=None) -> str:
    import torch

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} ({os.cpu_count()} cores)"


def provenance(device=None) -> dict:
    import torch

    return {
        "commit": _git_commit(), "device": device_name(device), "torch": torch.__version__,
        "python": sys.version.split()[0], "numpy": np.__version__, "host": platform.node(),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text)).strip("_")


class Run:
    """One run directory: tables, arrays and ``run.json``."""

    def __init__(self, experiment: str, preset: str, config: dict, label: str = "",
                 root: Path | None = None):
        if preset not in PRESET_NAMES:
            raise ValueError(f"preset must be one of {PRESET_NAMES}, got {preset!r}")
        self.experiment, self.preset, self.config, self.label = experiment, preset, config, label
        self.key = config_hash({"experiment": experiment, "config": config})
        name = "-".join(p for p in (preset, _slug(label), self.key) if p)
        self.path = Path(root or results_root()) / _slug(experiment) / name

    def __repr__(self) -> str:
        return f"Run({self.path})"

    @property
    def complete(self) -> bool:
        return (self.path / "run.json").is_file()

    @property
    def info(self) -> dict:
        return json.loads((self.path / "run.json").read_text())

    def save_table(self, name: str, rows) -> None:
        """Save a table (a pandas DataFrame or a list of dicts) as ``<name>.csv``."""
        import pandas as pd

        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        atomic_write(self.path / f"{name}.csv", frame.to_csv(index=False, float_format="%.9g"))

    def table(self, name: str):
        import pandas as pd

        file = self.path / f"{name}.csv"
        if not file.is_file():
            raise FileNotFoundError(f"run {self.path} has no table {name!r} ({file} is missing)")
        return pd.read_csv(file)

    def save_arrays(self, name: str, **arrays) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        atomic_write(self.path / f"{name}.npz", buf.getvalue())

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        file = self.path / f"{name}.npz"
        if not file.is_file():
            raise FileNotFoundError(f"run {self.path} has no arrays {name!r} ({file} is missing)")
        with np.load(file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def finish(self, wall_seconds: float, summary: dict | None = None, device=None,
               commit: str | None = None) -> None:
        """Write ``run.json`` (last, atomically): the run is complete from then on.

        ``commit`` is the code's commit when the run started (default: now).
        """
        prov = provenance(device)
        prov["commit"] = commit or prov["commit"]
        info = {"experiment": self.experiment, "preset": self.preset, "label": self.label,
                "config_hash": self.key, "config": self.config, "wall_seconds": round(wall_seconds, 2),
                **prov, "summary": summary or {}}
        atomic_write(self.path / "run.json", json.dumps(info, indent=2, sort_keys=False, default=float))


def list_runs(experiment: str | None = None, include_smoke: bool = False) -> list[Run]:
    """Every complete run under the results root (of one experiment if given), oldest first."""
    base = results_root()
    files = sorted(base.glob(f"{_slug(experiment) if experiment else '*'}/*/run.json"))
    runs = []
    for file in files:
        info = json.loads(file.read_text())
        if info["preset"] == "smoke" and not include_smoke:
            continue
        run = Run(info["experiment"], info["preset"], info["config"], info.get("label", ""), root=base)
        if run.path != file.parent:
            raise ValueError(f"{file} does not match its config hash (expected {run.path}); "
                             "was it edited or moved by hand?")
        runs.append(run)
    return sorted(runs, key=lambda r: r.info["finished"])


def open_run(experiment: str, preset: str, config: dict, label: str = "") -> Run:
    return Run(experiment, preset, config, label)


def load_or_run(experiment: str, preset: str, config: dict, fn: Callable[[Run], dict | None],
                label: str = "", force: bool = False, device=None) -> Run:
    """Return the complete run for this config, running ``fn(run)`` first if there is none.

    ``fn`` writes tables/arrays into the run (and may resume from its own checkpoint there) and
    returns a JSON-able summary. ``force=True`` reruns even when a complete run exists. With
    ``NCUTILS_REQUIRE_RESULTS=1`` (CI) a missing non-smoke run is an error instead of a long run.
    """
    run = Run(experiment, preset, config, label)
    if run.complete and not force:
        return run
    if preset != "smoke" and os.environ.get("NCUTILS_REQUIRE_RESULTS") == "1":
        raise RuntimeError(f"no complete results for {experiment!r} at preset {preset!r} in {run.path}, "
                           "and NCUTILS_REQUIRE_RESULTS=1 forbids computing them here (CI renders "
                           "committed results only); run the chapter or scripts/run_experiment.py first")
    if force and run.complete:
        (run.path / "run.json").unlink()
    start, commit = time.perf_counter(), _git_commit()
    summary = dict(fn(run) or {})
    if summary.get("complete") is False:  # interrupted on purpose: resume on the next call
        return run
    run.finish(summary.pop("wall_seconds", time.perf_counter() - start), summary, device=device,
               commit=commit)
    return run
