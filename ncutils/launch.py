"""Run the manifest's jobs (:mod:`ncutils.jobs`) through submitit: local processes or Slurm.

Needs ``submitit`` (``pip install submitit``; not needed to build the book). Every run is one
submitit job; runs are independent and hash-keyed, so the only coordination is the scheduler's.
A job is :class:`submitit.helpers.Checkpointable`: on preemption or timeout submitit's signal
handler resubmits the same call (``scontrol requeue`` on Slurm; the local controller restarts the
process), and the run resumes from its own ``checkpoint.pt`` (bitwise on the CPU). Runs that are
already complete are skipped; an incomplete one (a checkpoint left by a killed job) resumes when it
is launched again.

``local``: at most ``max_concurrent`` jobs at a time on this machine (with ``gpus_per_job`` > 0,
each job gets its own GPUs through ``CUDA_VISIBLE_DEVICES``). ``slurm``: one job array, at most
``max_concurrent`` array tasks at a time (``--array=...%N``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import submitit

from . import jobs as _jobs
from .store import results_root

__all__ = ["RunJob", "make_executor", "launch", "main"]


class RunJob(submitit.helpers.Checkpointable):
    """The submitit callable of one :class:`ncutils.jobs.Job`: runs it into ``results`` (a results
    root) and returns ``{"hash", "path", "complete", "resumed_from"}``.

    ``checkpoint`` (inherited) resubmits the same call on preemption or timeout; the run itself
    resumes from its checkpoint, so nothing else has to be saved.
    """

    def __init__(self, job: _jobs.Job, results: str, device: Optional[str] = None,
                 threads: Optional[int] = None):
        self.job, self.results, self.device, self.threads = job, str(results), device, threads

    def __call__(self) -> dict:
        os.environ["NCUTILS_RESULTS"] = self.results
        os.environ.setdefault("NCUTILS_PROGRESS", "0")
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        job = self.job
        resumed = job.resume_epoch()
        print(f"{job.experiment} {job.preset} {job.label} [{job.key}]: "
              + (f"resuming after epoch {resumed}" if resumed else "starting"), flush=True)
        run = job.execute(device=self.device, progress=False)
        print(f"{job.label} [{job.key}]: {'complete' if run.complete else 'incomplete'} in {run.path}", flush=True)
        return {"hash": job.key, "path": str(run.path), "complete": run.complete, "resumed_from": resumed}


def make_executor(kind: str, folder: Path | str, timeout_min: int = 240, gpus_per_job: int = 0,
                  cpus_per_job: Optional[int] = None, partition: Optional[str] = None,
                  max_concurrent: int = 1, max_requeues: int = 20, slurm_args: Optional[dict] = None,
                  signal_delay_s: Optional[int] = None):
    """A submitit executor: ``kind`` "local" or "slurm". ``max_requeues``: timeouts a job may be
    requeued after (preemptions do not count)."""
    if kind == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=max_requeues)
        ex.update_parameters(timeout_min=timeout_min, gpus_per_node=gpus_per_job,
                             signal_delay_s=30 if signal_delay_s is None else signal_delay_s)
        return ex
    if kind == "slurm":
        ex = submitit.SlurmExecutor(folder, max_num_timeout=max_requeues)
        params = dict(time=timeout_min, gpus_per_node=gpus_per_job, cpus_per_task=cpus_per_job or 8,
                      job_name="ncbook", array_parallelism=max_concurrent,
                      signal_delay_s=120 if signal_delay_s is None else signal_delay_s,
                      additional_parameters={"requeue": True, **(slurm_args or {})})
        if partition:
            params["partition"] = partition
        ex.update_parameters(**params)
        return ex
    raise ValueError(f"executor must be 'local' or 'slurm', got {kind!r}")


def launch(job_list: Sequence[_jobs.Job], executor, max_concurrent: int = 1, results: Optional[Path] = None,
           device: Optional[str] = None, threads: Optional[int] = None, gpus_per_job: int = 0,
           wait: bool = True, poll_s: float = 0.5, log=print) -> list[dict]:
    """Submit every job of ``job_list`` to ``executor`` (see :func:`make_executor`).

    Local: at most ``max_concurrent`` at a time, each with GPUs ``[slot * gpus_per_job, ...)``;
    waits for all. Slurm: one array (``max_concurrent`` was set on the executor); waits only if
    ``wait``. Returns one dict per job: ``hash``, ``label``, ``job_id``, ``state``, ``submitted`` and
    ``ended`` (``time.time()``; ``ended`` None when not waited for), ``error`` (a traceback) or
    ``result``.
    """
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1:
        raise ValueError(f"max_concurrent must be a positive integer, got {max_concurrent!r}")
    results = str(results or results_root())
    calls = [RunJob(job, results, device=device, threads=threads) for job in job_list]
    records = [{"hash": j.key, "label": j.label, "experiment": j.experiment, "job_id": None, "state": "pending",
                "submitted": None, "ended": None} for j in job_list]
    if isinstance(executor, submitit.LocalExecutor):
        _run_local(calls, records, executor, max_concurrent, gpus_per_job, poll_s, log)
        return records
    with executor.batch():
        handles = [executor.submit(call) for call in calls]
    for rec, handle in zip(records, handles):
        rec.update(job_id=handle.job_id, state="submitted", submitted=time.time())
        log(f"submitted {rec['experiment']} {rec['label']} [{rec['hash']}] as job {handle.job_id}")
    if wait:
        for rec, handle in zip(records, handles):
            _collect(rec, handle, log)
    return records


def _collect(rec: dict, handle, log) -> None:
    try:
        rec["result"] = handle.result()
        rec["state"] = "complete" if rec["result"]["complete"] else "incomplete"
    except Exception as err:  # the job's traceback, as submitit reports it
        rec["state"], rec["error"] = "failed", str(err)
    rec["ended"] = time.time()
    log(f"{rec['state']}: {rec['experiment']} {rec['label']} [{rec['hash']}] (job {rec['job_id']}"
        + (f"; logs: {handle.paths.stdout.parent}" if rec["state"] == "failed" else "") + ")")


def _run_local(calls, records, executor, max_concurrent, gpus_per_job, poll_s, log) -> None:
    queue, running = list(range(len(calls))), {}  # running: slot -> (index, handle)
    try:
        while queue or running:
            for slot in [s for s in range(max_concurrent) if s not in running]:
                if not queue:
                    break
                i = queue.pop(0)
                if gpus_per_job:
                    executor.update_parameters(visible_gpus=tuple(range(slot * gpus_per_job,
                                                                        (slot + 1) * gpus_per_job)))
                handle = executor.submit(calls[i])
                records[i].update(job_id=handle.job_id, state="running", submitted=time.time())
                log(f"started {records[i]['experiment']} {records[i]['label']} [{records[i]['hash']}] "
                    f"as local job {handle.job_id} (slot {slot})")
                running[slot] = (i, handle)
            time.sleep(poll_s)
            for slot, (i, handle) in list(running.items()):
                if handle.done():
                    _collect(records[i], handle, log)
                    del running[slot]
    except BaseException:
        for i, handle in running.values():
            handle.cancel(check=False)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    import torch

    p = argparse.ArgumentParser(prog="scripts/launch.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper", help="preset of every run (default paper)")
    p.add_argument("--experiments", nargs="*", default=None,
                   help=f"experiments to run (default all: {', '.join(_jobs.registered())})")
    p.add_argument("--executor", choices=("local", "slurm"), default="local")
    p.add_argument("--partition", default=None, help="slurm partition")
    p.add_argument("--gpus-per-job", type=int, default=None,
                   help="GPUs per job (default: 1 on slurm and on a local machine with a GPU, else 0)")
    p.add_argument("--cpus-per-job", type=int, default=None,
                   help="CPU threads per job (default: local, the cores shared out; slurm, 8)")
    p.add_argument("--timeout-min", type=int, default=240,
                   help="wall-clock limit per job attempt; a job that hits it is requeued and resumes")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="jobs running at once (default: local, GPUs / gpus-per-job or 1; slurm, 64)")
    p.add_argument("--max-requeues", type=int, default=20, help="timeouts after which a job gives up")
    p.add_argument("--folder", default="_build/submitit/%j", help="submitit logs and pickles")
    p.add_argument("--results", default=None, help="results root (default $NCUTILS_RESULTS or data/results)")
    p.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra #SBATCH option, e.g. --slurm-arg account=myproj (repeatable)")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    p.add_argument("--dry-run", action="store_true", help="list what would be submitted and stop")
    p.add_argument("--signal-delay-s", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    n_gpus = torch.cuda.device_count() if args.executor == "local" else 0
    gpus = args.gpus_per_job if args.gpus_per_job is not None else (1 if args.executor == "slurm" or n_gpus else 0)
    if gpus < 0:
        p.error(f"--gpus-per-job must be >= 0, got {gpus}")
    if args.executor == "local" and gpus > n_gpus:
        p.error(f"--gpus-per-job {gpus}: this machine has {n_gpus} GPU(s)")
    default_conc = (max(1, n_gpus // gpus) if gpus else 1) if args.executor == "local" else 64
    conc = args.max_concurrent or default_conc
    if args.executor == "local" and gpus and conc * gpus > n_gpus:
        p.error(f"--max-concurrent {conc} x --gpus-per-job {gpus} needs more than this machine's {n_gpus} GPUs")
    threads = args.cpus_per_job or (max(1, (os.cpu_count() or 1) // conc) if args.executor == "local" else 8)
    slurm_args = {}
    for item in args.slurm_arg:
        if "=" not in item:
            p.error(f"--slurm-arg must be KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        slurm_args[key] = value

    todo, skipped = [], []
    for job in _jobs.all_jobs(args.preset, args.experiments):
        if job.complete:
            continue
        has_gpu = gpus > 0
        if job.device == "cuda" and not has_gpu:
            skipped.append(job)
            continue
        todo.append(job)
    for job in skipped:
        print(f"skipped (needs a GPU, --gpus-per-job is 0): {job.experiment} {job.label} [{job.key}]")
    hours = sum(job.gpu_hours() for job in todo)
    print(f"{len(todo)} incomplete run(s) of preset {args.preset!r}, about {hours:.1f} GPU hours in all; "
          f"executor {args.executor}, {conc} at a time, {gpus} GPU(s) and {threads} CPU thread(s) per job")
    if args.dry_run or not todo:
        for job in todo:
            print(f"  {job.experiment} {job.label} [{job.key}] ~{job.gpu_hours():.2f} h")
        return 0
    # The jobs unpickle ncutils: make this checkout importable wherever they start.
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x])
    executor = make_executor(args.executor, args.folder, timeout_min=args.timeout_min, gpus_per_job=gpus,
                             cpus_per_job=threads, partition=args.partition, max_concurrent=conc,
                             max_requeues=args.max_requeues, slurm_args=slurm_args,
                             signal_delay_s=args.signal_delay_s)
    records = launch(todo, executor, max_concurrent=conc, results=args.results and Path(args.results).resolve(),
                     threads=threads, gpus_per_job=gpus if args.executor == "local" else 0,
                     wait=not (args.no_wait and args.executor == "slurm"))
    failed = [r for r in records if r["state"] in ("failed", "incomplete")]
    for r in failed:
        print(f"FAILED {r['experiment']} {r['label']} [{r['hash']}]: {r.get('error', r['state'])}", file=sys.stderr)
    return 1 if failed else 0
