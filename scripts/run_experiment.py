"""Train the runs of an experiment at a preset (resumable): the same entry point on a laptop, a GPU
runner or Colab; and the run manifest (ncutils.jobs): list every independent run, or run one by
its config hash. Examples:

    python scripts/run_experiment.py terminal_phase --preset cpu --only mnist:mlp
    python scripts/run_experiment.py terminal_phase --preset cpu --only fashionmnist:vgg11 --lrs 0.0679
    python scripts/run_experiment.py camvid_cr --preset cpu --only cr --seeds 0 1
    python scripts/run_experiment.py minority_collapse --preset cpu --only fashionmnist:mlp:R10
    python scripts/run_experiment.py nc_ood --preset cpu --seeds 0 1 2
    python scripts/run_experiment.py camvid_ceco --preset cpu --only ceco --seeds 0 1 2
    python scripts/run_experiment.py all --preset paper --list          # JSON lines, one per run
    python scripts/run_experiment.py all --preset paper --totals        # runs and GPU hours per chapter
    python scripts/run_experiment.py all --preset paper --matrix        # the GitHub Actions matrix
    python scripts/run_experiment.py ufm --preset paper --run 2badd9e034

EXPERIMENT is a registered experiment (terminal_phase, ufm, fixed_etf, camvid_cr, ...) or `all`
(with --list, --totals, --matrix and --run). --run trains exactly the run with that config hash (or
hash prefix) and nothing else; --list prints experiment, preset, chapter, label, hash, kind, group,
device, complete and est_hours (a rough estimate on one A100/H100-class GPU; see ncutils.jobs).
"""
import argparse
import json
import sys

from ncutils import jobs

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("experiment")
parser.add_argument("--preset", default="cpu")
parser.add_argument("--seed", type=int, default=None,
                    help="seed of a classification experiment (default 0; minority_collapse without "
                         "--seed or --seeds: seed 0 and the preset's remedy_seeds runs)")
parser.add_argument("--seeds", type=int, nargs="*", default=None,
                    help="seeds to run (camvid_cr, camvid_ceco, nc_ood: default the preset's; the "
                         "classification experiments, minority_collapse and ufm: default --seed)")
parser.add_argument("--only", nargs="*", default=None,
                    help="dataset:arch pairs to run, for camvid_cr variant names, for minority_collapse "
                         "dataset:arch:variant triples, or 'model' for its Layer-Peeled Model sweep, "
                         "for camvid_ceco and nc_ood arm names (default all)")
parser.add_argument("--sweep", action="store_true", help="camvid_cr: the preset's lambda sweep")
parser.add_argument("--lrs", type=float, nargs="*", default=None,
                    help="only these learning rates of a pair's lr sweep (to spread it over processes)")
parser.add_argument("--force", action="store_true", help="rerun even if complete results exist")
manifest = parser.add_mutually_exclusive_group()
manifest.add_argument("--list", action="store_true", help="print every run of the preset as JSON lines")
manifest.add_argument("--totals", action="store_true", help="print runs and estimated hours per chapter")
manifest.add_argument("--matrix", action="store_true",
                      help="print the incomplete runs as a GitHub Actions matrix (JSON)")
manifest.add_argument("--run", metavar="HASH", help="train exactly the run with this config hash")
parser.add_argument("--incomplete", action="store_true", help="--list: only runs without complete results")
parser.add_argument("--with-config", action="store_true", help="--list: include each run's config")
parser.add_argument("--device", default=None, help="--run: torch device (default: cuda when available)")
args = parser.parse_args()

if args.list or args.totals or args.matrix or args.run:
    experiments = None if args.experiment == "all" else [args.experiment]
    if args.run:
        job = jobs.find_job(args.run, args.preset, experiments)
        epoch = job.resume_epoch()
        print(f"== {job.experiment} {job.preset} {job.label} [{job.key}]"
              + (f": resuming after epoch {epoch}" if epoch else ""), flush=True)
        run = job.execute(device=args.device, progress=None, force=args.force)
        print(run.path, run.info["summary"] if run.complete else "incomplete", flush=True)
        sys.exit(0 if run.complete else 1)
    selected = jobs.all_jobs(args.preset, experiments)
    if args.totals:
        print("| chapter | experiments | runs | complete | est. GPU hours | est. CPU hours |")
        print("|---|---|---|---|---|---|")
        rows = jobs.chapter_totals(selected)
        for r in rows:
            print(f"| {r['chapter']} | {', '.join(r['experiments'])} | {r['runs']} | {r['complete']} | "
                  f"{r['gpu_hours']:.2f} | {r['cpu_hours']:.2f} |")
        print(f"| all | | {sum(r['runs'] for r in rows)} | {sum(r['complete'] for r in rows)} | "
              f"{sum(r['gpu_hours'] for r in rows):.2f} | {sum(r['cpu_hours'] for r in rows):.2f} |")
    elif args.matrix:
        todo = [j for j in selected if not j.complete]
        if len(todo) > 256:  # a GitHub Actions matrix holds at most 256 jobs
            sys.exit(f"{len(todo)} incomplete runs: more than the 256 jobs a GitHub Actions matrix holds; "
                     "pass one experiment at a time")
        print(json.dumps({"include": [{"experiment": j.experiment, "hash": j.key, "label": j.label,
                                       "chapter": j.chapter, "device": j.device or "any"} for j in todo]}))
    else:
        for job in selected:
            if not (args.incomplete and job.complete):
                print(json.dumps(job.record(with_config=args.with_config)), flush=True)
    sys.exit(0)

if args.experiment == "all":
    parser.error("EXPERIMENT 'all' needs --list, --totals, --matrix or --run")
if args.experiment == "minority_collapse":
    from ncutils import minority

    want_model = args.only is None or "model" in args.only
    nets = None if args.only is None else tuple(o for o in args.only if o != "model")
    runs = {("model",): minority.run_model(args.preset, force=args.force)} if want_model else {}
    if nets is None or nets:
        for s in (args.seeds if args.seeds is not None else [args.seed or 0]):
            runs.update({(*key, f"seed {s}"): run for key, run in minority.run_networks(
                args.preset, seed=s, force=args.force, only=nets).items()})
        if args.seeds is None and args.seed is None:  # the remedies' other seeds
            runs.update({(*key[:3], f"seed {key[3]}"): run for key, run in minority.run_remedy_seeds(
                args.preset, force=args.force, only=nets).items()})
elif args.experiment == "camvid_cr":
    from ncutils import seg

    runs = seg.run_segmentation(args.preset, force=args.force, only=args.only, seeds=args.seeds,
                                sweep=args.sweep)
elif args.experiment == "camvid_ceco":
    from ncutils import ceco

    runs = ceco.run_ceco(args.preset, force=args.force, only=args.only, seeds=args.seeds)
elif args.experiment == "nc_ood":
    from ncutils import ood_train

    runs = ood_train.run_nc_ood(args.preset, force=args.force, only=args.only, seeds=args.seeds)
elif args.experiment == "ufm":
    from ncutils import ufm

    if args.only is not None:
        parser.error("ufm has one run per seed; --only does not apply")
    runs = {(f"seed {s}",): ufm.run_landscape(args.preset, seed=s, force=args.force)
            for s in (args.seeds if args.seeds is not None else [args.seed or 0])}
else:
    from ncutils import train

    only = None if args.only is None else tuple(tuple(p.split(":")) for p in args.only)
    runs = {}
    for s in (args.seeds if args.seeds is not None else [args.seed or 0]):
        runs.update({(*key, f"seed {s}"): run for key, run in train.run_experiment(
            args.experiment, args.preset, seed=s, force=args.force, only=only,
            lrs=None if args.lrs is None else tuple(args.lrs)).items()})
for key, run in runs.items():
    print(*key, run.path, run.info["summary"] if run.complete else "incomplete", flush=True)
