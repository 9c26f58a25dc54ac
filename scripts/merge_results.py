"""Merge results folders (one per job, e.g. the GPU workflow's run-* artifacts) into one results root.

    python scripts/merge_results.py _build/artifacts/run-* --into data/results

Runs are hash-keyed folders (<experiment>/<preset>-<label>-<hash>), so runs of separate jobs never
collide; a run already complete in the destination is kept. Incomplete runs are reported, not copied.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ncutils.jobs import merge_results  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("sources", nargs="+", help="results roots to merge")
parser.add_argument("--into", required=True, help="the results root they go into")
args = parser.parse_args()
report = merge_results(args.sources, args.into)
for what in ("copied", "kept", "incomplete"):
    for rel in report[what]:
        print(f"{what}: {rel}")
print(f"{len(report['copied'])} run(s) copied, {len(report['kept'])} kept, {len(report['incomplete'])} "
      f"incomplete (not copied) into {args.into}")
