"""Add the integrity manifest (size, sha256, rows of every file) to complete runs that lack one.

Runs finished by code older than the manifest have a ``run.json`` without ``files``. This script
checks each such run first (every table and array readable, ``history`` with one row per epoch of
``summary.epochs_done``) and then appends the ``files`` field to its ``run.json``; nothing else in
the file changes, so config hashes and provenance stay as they were. Runs that already have a
manifest are verified against it. Examples:

    python scripts/seal_results.py                 # every run under the results root
    python scripts/seal_results.py --smoke         # smoke runs too
    python scripts/seal_results.py --check         # verify only, write nothing
"""
import argparse
import sys

from ncutils import store

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("experiment", nargs="?", default=None, help="only this experiment (default all)")
parser.add_argument("--smoke", action="store_true", help="include smoke runs")
parser.add_argument("--check", action="store_true", help="verify every run, add no manifest")
args = parser.parse_args()
failed = 0
for run in store.list_runs(args.experiment, include_smoke=args.smoke):
    try:
        if args.check or "files" in run.info:
            run.verify()
            status = "ok (manifest)" if "files" in run.info else "ok (no manifest)"
        else:
            status = "sealed" if store.seal_run(run) else "ok (manifest)"
    except (store.ResultsError, FileNotFoundError) as err:
        failed += 1
        status = f"REFUSED: {err}"
    print(f"{run.path.relative_to(store.results_root())}: {status}", flush=True)
sys.exit(1 if failed else 0)
