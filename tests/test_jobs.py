"""The run manifest (ncutils.jobs) and the submitit launcher (ncutils.launch).

The manifest must list exactly the runs the chapters load (same config hashes), for every
experiment and preset; runs launched as independent submitit jobs (2 at a time) must give the
results of a serial run; a job interrupted mid-run and requeued by submitit must finish with the
results of an uninterrupted run.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ncutils import config, jobs, memory, seg, store, train, ufm

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_seconds", "step_seconds", "seconds"}  # wall-clock columns: never compared
# run.json fields that differ between two runs of one config: provenance, timing, and the checksums
# of the files (their timing columns differ); the tables themselves are compared column by column.
PROVENANCE = {"commit", "device", "torch", "python", "numpy", "host", "finished", "wall_seconds", "files"}


def _seeds(experiment, preset):
    return config.get_preset(experiment, preset).get("seeds", (0,))


def _chapter_02(preset):
    for seed in _seeds("ufm", preset):
        ufm.run_landscape(preset, seed=seed)


def _chapter_03(preset):
    memory.measure_preset(preset, "cpu")
    memory.measure_preset(preset, "cuda")
    for seed in _seeds("fixed_etf", preset):
        train.run_experiment("fixed_etf", preset, seed=seed)


def _chapter_04(preset):
    exp = config.get_preset("camvid_cr", preset)
    seg.run_segmentation(preset, seeds=list(exp["seeds"]))
    if exp.get("lambda_sweep"):
        seg.run_segmentation(preset, sweep=True, seeds=list(exp["lambda_sweep"]["seeds"]))


def _chapter_05(preset):
    from ncutils import minority

    minority.run_model(preset)
    minority.run_networks(preset, seed=0)
    minority.run_remedy_seeds(preset)


def _chapter_06(preset):
    from ncutils import ood_train

    ood_train.run_nc_ood(preset, seeds=list(_seeds("nc_ood", preset)))


# What each chapter calls to load its runs (chapters/NN_*.py), at seed offset 0. A new experiment
# adds its chapter's calls here: test_every_experiment_has_a_chapter_call fails until it does.
CHAPTER_CALLS = {
    "terminal_phase": lambda p: [train.run_experiment("terminal_phase", p, seed=s)
                                 for s in _seeds("terminal_phase", p)],
    "ufm": _chapter_02,
    "fixed_etf": _chapter_03,
    "camvid_cr": _chapter_04,
    "minority_collapse": _chapter_05,
    "nc_ood": _chapter_06,
    "camvid_ceco": lambda p: __import__("ncutils.ceco").ceco.run_ceco(p),
}


def test_every_experiment_is_registered_and_has_a_chapter_call():
    assert set(jobs.registered()) == set(config.PRESETS), "register every experiment in ncutils.jobs"
    assert set(CHAPTER_CALLS) == set(config.PRESETS), "add the chapter's calls to CHAPTER_CALLS"
    assert list(jobs.registered().values()) == sorted(jobs.registered().values())


@pytest.mark.parametrize("preset", config.PRESET_NAMES)
@pytest.mark.parametrize("experiment", sorted(config.PRESETS))
def test_manifest_hashes_equal_the_runs_the_chapter_loads(experiment, preset, monkeypatch, tmp_path):
    monkeypatch.setenv("NCUTILS_RESULTS", str(tmp_path))  # nothing complete: sweeps pick no winner
    loaded = []

    def fake_load_or_run(exp, pre, cfg, fn, label="", force=False, device=None):
        run = store.Run(exp, pre, cfg, label)
        loaded.append((exp, pre, label, run.key))
        return run

    monkeypatch.setattr(store, "load_or_run", fake_load_or_run)
    monkeypatch.setattr(train, "load_or_run", fake_load_or_run)
    from ncutils import minority

    monkeypatch.setattr(minority, "load_or_run", fake_load_or_run)
    CHAPTER_CALLS[experiment](preset)
    listed = [(j.experiment, j.preset, j.label, j.key) for j in jobs.experiment_jobs(experiment, preset)]
    assert loaded and len(set(listed)) == len(listed)
    assert sorted(set(loaded)) == sorted(listed)


def test_paper_manifest_counts_and_records():
    paper = jobs.all_jobs("paper")
    by_exp = {e: jobs.experiment_jobs(e, "paper") for e in jobs.registered()}
    exp = config.get_preset("terminal_phase", "paper")
    sweeps = sum(len(exp["lr_sweep"].get(f"{d}:{a}", [None])) for d in exp["datasets"] for a in exp["archs"])
    assert len(by_exp["terminal_phase"]) == sweeps * len(_seeds("terminal_phase", "paper"))
    etf = config.get_preset("fixed_etf", "paper")
    assert len(by_exp["fixed_etf"]) == (len(etf["datasets"]) * len(etf["variants"])
                                        * len(_seeds("fixed_etf", "paper")) + 2)
    cam = config.get_preset("camvid_cr", "paper")
    assert len(by_exp["camvid_cr"]) == (len(cam["variants"]) * len(cam["seeds"])
                                        + len(cam["lambda_sweep"]["cr_weights"]) * len(cam["lambda_sweep"]["seeds"]))
    for job in paper:
        rec = job.record()
        assert json.loads(json.dumps(rec)) == rec
        assert rec["hash"] == job.run.path.name.rsplit("-", 1)[1] and rec["est_hours"] > 0
    # more data and epochs cost more
    smoke = {j.experiment: j.gpu_hours() for j in jobs.all_jobs("smoke")}
    assert all(job.gpu_hours() > smoke[job.experiment] for job in paper if job.kind != "memory")
    one = by_exp["ufm"][0]
    assert jobs.find_job(one.key[:6], "paper", ["ufm"]) == one
    with pytest.raises(ValueError, match="matches no run"):
        jobs.find_job("zzzz", "paper")
    with pytest.raises(ValueError, match="experiment must be one of"):
        jobs.experiment_jobs("no_such_experiment", "paper")
    with pytest.raises(ValueError, match="preset must be one of"):
        jobs.experiment_jobs("ufm", "huge")
    with pytest.raises(ValueError, match="kind must be one of"):
        jobs.Job("ufm", "paper", "x", {}, "bake")


def test_dataset_sizes_of_the_cost_model_match_the_data(real_data):
    from ncutils import data

    for name, (shape, k, n_train, n_test) in jobs._IMAGE_DATA.items():
        x, y = data.load_dataset(name, "train")
        _, yt = data.load_dataset(name, "test")
        assert tuple(x.shape[1:]) in (shape, shape[1:]) and int(y.max()) + 1 == k
        assert int(np.bincount(y.numpy()).min()) * k == n_train and len(yt) == n_test


def _fake_run(root, experiment, label, cfg, rows=3, finish=True):
    run = store.Run(experiment, "smoke", cfg, label, root=root)
    run.save_table("history", [{"epoch": i, "x": i * 0.5} for i in range(rows)])
    (run.path / "checkpoint.pt").write_bytes(b"not committed")
    if finish:
        run.finish(1.0, {"ok": 1})
    return run


def test_merge_results_copies_complete_runs_and_keeps_existing(tmp_path):
    a, b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "dest"
    ra = _fake_run(a, "exp", "one", {"lr": 1})
    rb = _fake_run(b, "exp", "two", {"lr": 2})
    _fake_run(b, "exp", "half", {"lr": 3}, finish=False)
    rep = jobs.merge_results([a, b], dest)
    assert sorted(rep["copied"]) == sorted(str(r.path.relative_to(r.path.parents[1])) for r in (ra, rb))
    assert rep["incomplete"] == ["exp/smoke-half-" + store.Run("exp", "smoke", {"lr": 3}, "half").key]
    for r in (ra, rb):
        copy = dest / r.path.relative_to(r.path.parents[1])
        assert (copy / "history.csv").read_bytes() == (r.path / "history.csv").read_bytes()
        assert not (copy / "checkpoint.pt").exists()
    again = jobs.merge_results([a], dest)
    assert again["copied"] == [] and again["kept"] == [str(ra.path.relative_to(a))]
    bad = b / "exp" / "smoke-moved-0000000000"
    ra.path.rename(bad)
    with pytest.raises(ValueError, match="does not match its folder"):
        jobs.merge_results([a, b], tmp_path / "dest2")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        jobs.merge_results([tmp_path / "nowhere"], dest)


# ------------------------------------------------------------------------- through submitit


def _same_results(a: Path, b: Path) -> int:
    """Every run under root ``b`` exists under ``a`` with equal tables, arrays and run.json (timing
    and provenance aside); the number of runs compared."""
    runs_b = sorted(p.parent.relative_to(b) for p in b.glob("*/*/run.json"))
    runs_a = sorted(p.parent.relative_to(a) for p in a.glob("*/*/run.json"))
    assert runs_a == runs_b
    for rel in runs_b:
        files = sorted(p.name for p in (b / rel).iterdir() if p.suffix in (".csv", ".npz"))
        assert files == sorted(p.name for p in (a / rel).iterdir() if p.suffix in (".csv", ".npz")), rel
        for name in files:
            if name.endswith(".csv"):
                ta, tb = (pd.read_csv(root / rel / name) for root in (a, b))
                keep = [c for c in tb.columns if c not in TIMING]
                pd.testing.assert_frame_equal(ta[keep], tb[keep], check_exact=True)
            else:
                with np.load(a / rel / name) as za, np.load(b / rel / name) as zb:
                    assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)
        ia, ib = (json.loads((root / rel / "run.json").read_text()) for root in (a, b))
        for info in (ia, ib):
            for key in PROVENANCE:
                info.pop(key, None)
            for key in TIMING:
                info["summary"].pop(key, None)
        assert ia == ib, rel
    return len(runs_b)


@pytest.fixture
def job_env(monkeypatch, real_data):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NCUTILS_PROGRESS", "0")
    # The jobs run with one thread; so must the serial reference in this process (torch read the
    # thread count at import, before OMP_NUM_THREADS was set here): float sums depend on it.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_local_submitit_two_at_a_time_equals_a_serial_run(tmp_path, monkeypatch, job_env):
    launch = pytest.importorskip("ncutils.launch")
    experiments = ["terminal_phase", "ufm"]  # chapters 1 and 2 at the smoke preset: 4 jobs
    todo = jobs.all_jobs("smoke", experiments)
    executor = launch.make_executor("local", tmp_path / "submitit" / "%j", timeout_min=60)
    records = launch.launch(todo, executor, max_concurrent=2, results=tmp_path / "jobs", threads=1,
                            poll_s=0.2, log=lambda *a: None)
    assert [r["state"] for r in records] == ["complete"] * len(todo), [r.get("error") for r in records]
    spans = [(r["submitted"], r["ended"]) for r in records]
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert 1 <= most <= 2  # never more than 2 jobs at once

    monkeypatch.setenv("NCUTILS_RESULTS", str(tmp_path / "serial"))
    for experiment in experiments:
        CHAPTER_CALLS[experiment]("smoke")
    assert _same_results(tmp_path / "jobs", tmp_path / "serial") == len(todo)

    # The Actions matrix path: one run by its hash into its own folder, then merged.
    one = todo[0]
    env = dict(os.environ, NCUTILS_RESULTS=str(tmp_path / "matrix-1"))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_experiment.py"), one.experiment,
                          "--preset", "smoke", "--run", one.key], env=env, capture_output=True, text=True,
                         timeout=1200)
    assert out.returncode == 0, out.stderr
    merged = jobs.merge_results([tmp_path / "matrix-1"], tmp_path / "merged")
    assert merged["copied"] == [str(one.run.path.relative_to(one.run.path.parents[1]))]
    serial_one = tmp_path / "serial-one"
    rel = one.run.path.relative_to(one.run.path.parents[1])
    (serial_one / rel).parent.mkdir(parents=True)
    os.symlink(tmp_path / "serial" / rel, serial_one / rel)
    assert _same_results(tmp_path / "merged", serial_one) == 1


def _task_pid(controller_pid: int, timeout: float = 60.0) -> int:
    """The pid of the job process under a local submitit controller."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            kids = Path(f"/proc/{controller_pid}/task/{controller_pid}/children").read_text().split()
        except OSError:
            kids = []
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("the local job process did not start")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc (Linux)")
def test_interrupted_job_is_requeued_and_ends_as_an_uninterrupted_run(tmp_path, monkeypatch, job_env):
    launch = pytest.importorskip("ncutils.launch")
    monkeypatch.setenv("NCUTILS_CHECKPOINT_SECONDS", "0")  # a checkpoint every epoch: preempt after the 2nd
    base = jobs.experiment_jobs("terminal_phase", "smoke")[0]
    cfg = dict(base.config, epochs=16, n_snapshots=4, snapshot_every=None)  # long enough to interrupt
    job = jobs.Job("terminal_phase", "smoke", "requeue-test", cfg, "train")
    executor = launch.make_executor("local", tmp_path / "submitit" / "%j", timeout_min=10, max_requeues=3)
    handle = executor.submit(launch.RunJob(job, str(tmp_path / "jobs"), threads=1))
    ckpt = tmp_path / "jobs" / job.run.path.relative_to(store.results_root()) / "checkpoint.pt"
    task = _task_pid(int(handle.job_id))
    end = time.time() + 120
    while time.time() < end:  # wait for a few epochs, then preempt (what Slurm/submitit send)
        if ckpt.is_file() and train.load_checkpoint(ckpt)["epoch"] >= 2:
            break
        time.sleep(0.05)
    os.kill(task, signal.SIGUSR2)
    result = handle.result()
    assert result["complete"]
    log = handle.stdout() + (handle.stderr() or "")
    assert "Requeued job" in log and "resuming after epoch" in log, log
    resumed = int(log.split("resuming after epoch ")[1].split()[0])
    assert 2 <= resumed < cfg["epochs"]

    monkeypatch.setenv("NCUTILS_RESULTS", str(tmp_path / "serial"))
    job.execute()
    assert _same_results(tmp_path / "jobs", tmp_path / "serial") == 1


def test_slurm_executor_asks_for_requeue_gpus_time_and_array_limit(tmp_path, monkeypatch):
    launch = pytest.importorskip("ncutils.launch")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    ex = launch.make_executor("slurm", tmp_path / "%j", timeout_min=240, gpus_per_job=1, cpus_per_job=8,
                              partition="gpu", max_concurrent=16, slurm_args={"account": "lab"})
    ex.parameters["map_count"] = 40  # as a batch of 40 jobs sets it
    text = ex._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for flag in ("--requeue", "--partition=gpu", "--gpus-per-node=1", "--time=240", "--cpus-per-task=8",
                 "--account=lab", "--array=0-39%16", "--signal=USR2@120"):
        assert f"#SBATCH {flag}\n" in text, flag
    with pytest.raises(ValueError, match="executor must be 'local' or 'slurm'"):
        launch.make_executor("kubernetes", tmp_path)
