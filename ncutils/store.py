"""Results keyed by a config hash, with provenance; load-or-run; atomic writes.

A run lives in ``<results root>/<experiment>/<preset>-<label>-<hash>/`` and holds tables (CSV),
arrays (NPZ) and ``run.json``: the config, preset, provenance (git commit, device, versions) and
wall seconds. ``run.json`` is written last, so its presence marks a complete run; building the book
loads complete runs and never retrains them. ``smoke`` runs are git-ignored; ``cpu`` and ``paper``
runs are committed. The results root is ``$NCUTILS_RESULTS`` (a relative path is taken from the
project root, not the working directory, so a script run from the repository root and a notebook
run from ``chapters/`` share one folder) or ``<project root>/data/results``.

Integrity: ``run.json`` records a manifest (``files``: size, sha256 and, for CSV tables, the row
count of every file of the run). :meth:`Run.table` and :meth:`Run.arrays` check the file against
it and refuse a damaged or truncated one (``ResultsError`` naming the file); runs written before
manifests existed still load (their history is checked against ``summary.epochs_done``), and
:func:`seal_run` adds the manifest to them. Results files are written with mode 0644 (less the
umask).

``force=True`` retrains into a staging folder beside the run (``<run>.staging``) and swaps it in
only once it is complete: an interrupted forced rerun leaves the old complete run in place.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .checks import check_bool
from .config import PRESET_NAMES, config_hash, plain_config
from .data import project_root

__all__ = ["project_root", "results_root", "atomic_write", "Run", "open_run", "load_or_run",
           "provenance", "device_name", "list_runs", "ResultsError", "seal_run", "file_manifest"]

STAGING_SUFFIX, OLD_SUFFIX = ".staging", ".old"  # a forced rerun in progress; a run being replaced
_NOT_RESULTS = ("run.json", "checkpoint.pt")  # never in a manifest (checkpoints are not committed)
_INFO_KEYS = ("experiment", "preset", "config", "finished", "summary")


class ResultsError(RuntimeError):
    """A results file that cannot be trusted: damaged, truncated, or inconsistent with its run."""


def results_root() -> Path:
    """``$NCUTILS_RESULTS`` (relative paths against the project root), else ``data/results``."""
    env = os.environ.get("NCUTILS_RESULTS")
    if not env:
        return project_root() / "data" / "results"
    path = Path(env).expanduser()
    return path if path.is_absolute() else project_root() / path


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it, racing other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path | str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename; the file gets
    mode 0666 less the umask (0644 usually), like a file opened with ``open(path, "w")``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600: unreadable for a shared folder
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _csv_rows(data: bytes, file: Path) -> int:
    import pandas as pd

    try:
        return len(pd.read_csv(io.BytesIO(data)))
    except pd.errors.EmptyDataError:
        return 0
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise ResultsError(f"{file} is damaged (not a readable CSV table: {err})") from err


def _is_result(file: Path) -> bool:
    return file.is_file() and file.name not in _NOT_RESULTS and not file.name.endswith(".tmp")


def file_manifest(path: Path | str) -> dict:
    """``{file name: {"bytes", "sha256"[, "rows"]}}`` of every results file in the folder ``path``
    (CSV tables also get their row count); ``run.json``, checkpoints and temporary files are left out."""
    path, out = Path(path), {}
    for file in sorted(path.iterdir()) if path.is_dir() else ():
        if not _is_result(file):
            continue
        data = file.read_bytes()
        out[file.name] = {"bytes": len(data), "sha256": _sha256(data)}
        if file.suffix == ".csv":
            out[file.name]["rows"] = _csv_rows(data, file)
    return out


def _read_info(file: Path) -> dict:
    """The parsed ``run.json`` at ``file``; a damaged, truncated or incomplete one is refused."""
    try:
        info = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{file} is damaged or truncated (not valid JSON: {err}); restore it "
                           "(e.g. `git checkout` it) or rerun the run with force=True") from err
    missing = [k for k in _INFO_KEYS if not isinstance(info, dict) or k not in info]
    if missing:
        raise ResultsError(f"{file} is damaged or incomplete: it lacks {missing}")
    files = info.get("files")
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(e, dict) and isinstance(e.get("bytes"), int) and isinstance(e.get("sha256"), str)
            for e in files.values())):
        raise ResultsError(f"{file} is damaged: its 'files' manifest is not a table of sizes and sha256s")
    return info


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

    def _sibling(self, suffix: str) -> "Run":
        """The same run in the folder ``<run folder><suffix>`` beside it (staging, old)."""
        other = copy.copy(self)
        other.path = self.path.with_name(self.path.name + suffix)
        return other

    @property
    def complete(self) -> bool:
        return (self.path / "run.json").is_file()

    @property
    def info(self) -> dict:
        """``run.json``, parsed; a damaged, truncated or misplaced one is refused (ResultsError)."""
        file = self.path / "run.json"
        info = _read_info(file)
        if info.get("config_hash", self.key) != self.key:
            raise ResultsError(f"{file} records config hash {info.get('config_hash')!r}, but this run's "
                               f"config hashes to {self.key!r}; was it edited or copied by hand?")
        return info

    def _read_checked(self, file: Path, kind: str) -> bytes:
        """The bytes of ``file``, checked against the manifest of a complete run."""
        if not file.is_file():
            raise FileNotFoundError(f"run {self.path} has no {kind} {file.stem!r} ({file} is missing)")
        data = file.read_bytes()
        if not self.complete:
            return data  # a run in progress: nothing recorded to check against yet
        info = self.info
        files = info.get("files")
        if files is None:
            return data  # written before manifests: checked by _check_legacy (tables) only
        entry = files.get(file.name)
        if entry is None:
            raise ResultsError(f"{file} is not part of the run: the manifest of {self.path / 'run.json'} "
                               f"lists only {sorted(files)}")
        if len(data) != entry["bytes"]:
            raise ResultsError(f"{file} is truncated or damaged: {len(data)} bytes, but the run recorded "
                               f"{entry['bytes']} in run.json; restore it or rerun with force=True")
        if _sha256(data) != entry["sha256"]:
            raise ResultsError(f"{file} is damaged: its sha256 differs from the one recorded in run.json "
                               "(bit rot, a bad copy or an edit); restore it or rerun with force=True")
        return data

    def _check_rows(self, name: str, file: Path, rows: int) -> None:
        if not self.complete:
            return
        info = self.info
        entry = (info.get("files") or {}).get(file.name)
        if entry is not None and "rows" in entry and entry["rows"] != rows:
            raise ResultsError(f"{file} has {rows} rows, but run.json records {entry['rows']}")
        done = info["summary"].get("epochs_done") if isinstance(info["summary"], dict) else None
        if name == "history" and isinstance(done, int) and rows != done:
            raise ResultsError(f"{file} has {rows} rows, but the run's summary in run.json says "
                               f"{done} epochs were done: the table is truncated or damaged; restore "
                               "it or rerun with force=True")

    def save_table(self, name: str, rows) -> None:
        """Save a table (a pandas DataFrame or a list of dicts) as ``<name>.csv``."""
        import pandas as pd

        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        atomic_write(self.path / f"{name}.csv", frame.to_csv(index=False, float_format="%.9g"))

    def table(self, name: str):
        """The table ``<name>.csv`` as a DataFrame, verified against the run's manifest; a history
        table must also have one row per epoch of ``summary.epochs_done`` when recorded."""
        import pandas as pd

        file = self.path / f"{name}.csv"
        data = self._read_checked(file, "table")
        try:
            frame = pd.read_csv(io.BytesIO(data))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ResultsError(f"{file} is damaged (not a readable CSV table: {err})") from err
        self._check_rows(name, file, len(frame))
        return frame

    def save_arrays(self, name: str, **arrays) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        atomic_write(self.path / f"{name}.npz", buf.getvalue())

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """The arrays of ``<name>.npz``, verified against the run's manifest."""
        file = self.path / f"{name}.npz"
        data = self._read_checked(file, "arrays")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except Exception as err:  # zip, CRC and format errors all mean a damaged file here
            raise ResultsError(f"{file} is damaged and cannot be read ({type(err).__name__}: {err})") from err

    def verify(self) -> None:
        """Check every file of a complete run against its manifest (ResultsError naming the file);
        without a manifest, check that every table and array reads and that ``history`` has one
        row per epoch of ``summary.epochs_done``."""
        files = self.info.get("files")
        if files is None:
            files = [f.name for f in sorted(self.path.iterdir()) if _is_result(f)]
        for name in files:
            file = self.path / name
            if file.suffix == ".csv":
                self.table(file.stem)
            elif file.suffix == ".npz":
                self.arrays(file.stem)
            else:
                self._read_checked(file, "file")

    def finish(self, wall_seconds: float, summary: dict | None = None, device=None,
               commit: str | None = None) -> None:
        """Write ``run.json`` (last, atomically), with the manifest of the run's files: the run is
        complete from then on.

        ``commit`` is the code's commit when the run started (default: now).
        """
        prov = provenance(device)
        prov["commit"] = commit or prov["commit"]
        info = {"experiment": self.experiment, "preset": self.preset, "label": self.label,
                "config_hash": self.key, "config": plain_config(self.config),
                "wall_seconds": round(wall_seconds, 2), **prov, "summary": summary or {},
                "files": file_manifest(self.path)}
        atomic_write(self.path / "run.json", json.dumps(info, indent=2, sort_keys=False, default=float))


def seal_run(run: Run) -> bool:
    """Add the ``files`` manifest to a complete run written before manifests existed.

    The run is checked first (``history`` against ``summary.epochs_done``, every table and array
    readable). Only the new field is added at the end of ``run.json``; every other byte stays.
    Returns True when the manifest was added, False when the run already had one.
    """
    file = run.path / "run.json"
    if not run.complete:
        raise ResultsError(f"{run.path} is not a complete run (no run.json); nothing to seal")
    info = run.info
    run.verify()  # with a manifest: every file; without: tables/arrays readable, history length
    if "files" in info:
        return False
    manifest = file_manifest(run.path)
    text = file.read_text()
    body = text.rstrip()
    if not body.endswith("}"):
        raise ResultsError(f"{file} does not end with a JSON object; not sealing it")
    block = json.dumps({"files": manifest}, indent=2)[1:-1].strip("\n")  # '  "files": {...}'
    new = body[:-1].rstrip() + ",\n" + block + "\n}" + text[len(body):]
    same = lambda obj: json.dumps(obj, sort_keys=True)  # noqa: E731 - NaN-safe comparison
    if same(json.loads(new)) != same({**info, "files": manifest}):
        raise ResultsError(f"{file}: adding the manifest would change other fields; not sealing it")
    atomic_write(file, new)
    return True


def list_runs(experiment: str | None = None, include_smoke: bool = False) -> list[Run]:
    """Every complete run under the results root (of one experiment if given), oldest first."""
    base = results_root()
    files = sorted(base.glob(f"{_slug(experiment) if experiment else '*'}/*/run.json"))
    runs = []
    for file in files:
        if file.parent.name.endswith((STAGING_SUFFIX, OLD_SUFFIX)):
            continue  # a forced rerun being staged or swapped in: not a stored run
        info = _read_info(file)
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


def _swap_in(run: Run, staged: Run) -> None:
    """Replace the folder of ``run`` with the complete ``staged`` one: rename the old folder aside,
    rename the new one into place, delete the old one. A crash in between is repaired by
    :func:`_recover` on the next call."""
    old = run._sibling(OLD_SUFFIX).path
    if old.exists():
        shutil.rmtree(old)
    if run.path.exists():
        os.replace(run.path, old)
    os.replace(staged.path, run.path)
    shutil.rmtree(old, ignore_errors=True)


def _recover(run: Run) -> None:
    """Finish a swap that a crash interrupted: a complete staged run goes into place; with no run
    folder and no complete staged run, the old folder comes back."""
    staged, old = run._sibling(STAGING_SUFFIX), run._sibling(OLD_SUFFIX)
    if staged.complete:
        _read_info(staged.path / "run.json")
        _swap_in(run, staged)
    elif not run.path.exists() and old.path.exists():
        os.replace(old.path, run.path)
    elif run.complete and old.path.exists():
        shutil.rmtree(old.path, ignore_errors=True)


def load_or_run(experiment: str, preset: str, config: dict, fn: Callable[[Run], dict | None],
                label: str = "", force: bool = False, device=None) -> Run:
    """Return the complete run for this config, running ``fn(run)`` first if there is none.

    ``fn`` writes tables/arrays into the run (and may resume from its own checkpoint there) and
    returns a JSON-able summary. A complete run is verified (``Run.verify``) before it is returned:
    a damaged file is refused, never silently used or retrained. With ``NCUTILS_REQUIRE_RESULTS=1``
    (CI) a missing non-smoke run is an error instead of a long run.

    ``force`` (a bool; a string such as ``"False"`` is refused) retrains from scratch with the
    current code: ``fn`` runs in a fresh, empty staging folder ``<run>.staging`` beside the run
    (no checkpoint of the old run is reused), and only when it completes is the staging folder
    swapped in (old folder renamed aside, new one renamed into place, old one deleted). An
    interrupted forced rerun leaves the old complete run intact and loadable; calling again with
    ``force=True`` resumes the staging folder (from its own checkpoint), and a staged run that
    completed but was not yet swapped in is swapped in by the next call.
    """
    force = check_bool(force, "force")
    run = Run(experiment, preset, config, label)
    _recover(run)
    if run.complete and not force:
        run.verify()
        return run
    if preset != "smoke" and os.environ.get("NCUTILS_REQUIRE_RESULTS") == "1":
        raise RuntimeError(f"no complete results for {experiment!r} at preset {preset!r} in {run.path}, "
                           "and NCUTILS_REQUIRE_RESULTS=1 forbids computing them here (CI renders "
                           "committed results only); run the chapter or scripts/run_experiment.py first")
    target = run._sibling(STAGING_SUFFIX) if force else run
    start, commit = time.perf_counter(), _git_commit()
    summary = dict(fn(target) or {})
    if summary.get("complete") is False:  # interrupted on purpose: resume on the next call
        return target
    target.finish(summary.pop("wall_seconds", time.perf_counter() - start), summary, device=device,
                  commit=commit)
    if force:
        _swap_in(run, target)
    return run
