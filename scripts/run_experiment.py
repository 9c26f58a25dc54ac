"""Train every run of a training experiment at a preset (resumable): the same entry point on a
laptop, a GPU runner or Colab. Examples:

    python scripts/run_experiment.py terminal_phase --preset cpu --only mnist:mlp
    python scripts/run_experiment.py terminal_phase --preset cpu --only fashionmnist:vgg11 --lrs 0.0679
    python scripts/run_experiment.py camvid_cr --preset cpu --only cr --seeds 0 1
    python scripts/run_experiment.py minority_collapse --preset cpu --only fashionmnist:mlp:R10
    python scripts/run_experiment.py nc_ood --preset cpu --seeds 0 1 2
    python scripts/run_experiment.py camvid_ceco --preset cpu --only ceco --seeds 0 1 2
"""
import argparse

from ncutils import ceco, minority, ood_train, seg, train

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("experiment")
parser.add_argument("--preset", default="cpu")
parser.add_argument("--seed", type=int, default=0, help="seed of a classification experiment")
parser.add_argument("--seeds", type=int, nargs="*", default=None,
                    help="camvid_cr, camvid_ceco, nc_ood: seeds to run (default: the preset's)")
parser.add_argument("--only", nargs="*", default=None,
                    help="dataset:arch pairs to run, for camvid_cr variant names, for minority_collapse "
                         "dataset:arch:variant triples, or 'model' for its Layer-Peeled Model sweep, "
                         "for camvid_ceco and nc_ood arm names (default all)")
parser.add_argument("--sweep", action="store_true", help="camvid_cr: the preset's lambda sweep")
parser.add_argument("--lrs", type=float, nargs="*", default=None,
                    help="only these learning rates of a pair's lr sweep (to spread it over processes)")
parser.add_argument("--force", action="store_true", help="rerun even if complete results exist")
args = parser.parse_args()
if args.experiment == "minority_collapse":
    want_model = args.only is None or "model" in args.only
    nets = None if args.only is None else tuple(o for o in args.only if o != "model")
    runs = {("model",): minority.run_model(args.preset, force=args.force)} if want_model else {}
    if nets is None or nets:
        runs.update(minority.run_networks(args.preset, seed=args.seed, force=args.force, only=nets))
elif args.experiment == "camvid_cr":
    runs = seg.run_segmentation(args.preset, force=args.force, only=args.only, seeds=args.seeds,
                                sweep=args.sweep)
elif args.experiment == "camvid_ceco":
    runs = ceco.run_ceco(args.preset, force=args.force, only=args.only, seeds=args.seeds)
elif args.experiment == "nc_ood":
    runs = ood_train.run_nc_ood(args.preset, force=args.force, only=args.only, seeds=args.seeds)
else:
    only = None if args.only is None else tuple(tuple(p.split(":")) for p in args.only)
    runs = train.run_experiment(args.experiment, args.preset, seed=args.seed, force=args.force, only=only,
                                lrs=None if args.lrs is None else tuple(args.lrs))
for key, run in runs.items():
    print(*key, run.path, run.info["summary"] if run.complete else "incomplete", flush=True)
