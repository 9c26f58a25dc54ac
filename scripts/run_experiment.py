"""Train every run of a training experiment at a preset (resumable): the same entry point on a
laptop, a GPU runner or Colab. Example: python scripts/run_experiment.py terminal_phase --preset cpu
"""
import argparse

from ncutils import train

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("experiment")
parser.add_argument("--preset", default="cpu")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--only", nargs="*", default=None, help="dataset:arch pairs to run (default all)")
parser.add_argument("--force", action="store_true", help="rerun even if complete results exist")
args = parser.parse_args()
only = None if args.only is None else tuple(tuple(p.split(":")) for p in args.only)
runs = train.run_experiment(args.experiment, args.preset, seed=args.seed, force=args.force, only=only)
for (dataset, arch), run in runs.items():
    print(dataset, arch, run.path, run.info["summary"] if run.complete else "incomplete", flush=True)
