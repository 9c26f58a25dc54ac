"""Launch every incomplete run of the book at a preset as independent jobs through submitit.

    python scripts/launch.py --preset paper --executor local                 # one machine, its GPUs
    python scripts/launch.py --preset paper --executor slurm --partition gpu --gpus-per-job 1 \
        --timeout-min 240 --max-concurrent 16 [--experiments terminal_phase fixed_etf]

Needs submitit (`pip install submitit`). See ncutils/launch.py and README "Rerun at paper scale".
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ncutils.launch import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
