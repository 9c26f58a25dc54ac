"""The state of the book, computed from the committed runs: which presets of each chapter have runs,
what the runs say about the chapter's claim, what is pending, and the compute spent.

Used by the status page (``status.py``) and, through glue, by the introduction. Nothing here is
typed by hand: every verdict is computed from ``run.json`` files and the runs' small tables, with
the criterion stated next to it.
"""

from __future__ import annotations

import math

import numpy as np

from . import config, store
from .plotting import short_device, t_interval

__all__ = ["CHAPTERS", "chapter_runs", "chapter_state", "status_frame", "runs_frame"]

# doc, short title, experiment (config.PRESETS key) in book order
CHAPTERS = (
    ("chapters/01_terminal_phase", "1. NC1-NC4 in the terminal phase", "terminal_phase"),
    ("chapters/02_ufm_landscape", "2. UFM landscape", "ufm"),
    ("chapters/03_fixed_etf", "3. Fixed ETF classifier, d = K", "fixed_etf"),
    ("chapters/04_segmentation_ceco", "4. Segmentation and the center-collapse head", "camvid_cr"),
    ("chapters/05_minority_collapse", "5. Minority collapse", "minority_collapse"),
    ("chapters/06_nc_ood", "6. Collapse vs OOD detection and transfer", "nc_ood"),
)


def chapter_runs(experiment: str, runs=None) -> dict:
    """``{preset: [Run, ...]}`` of the committed (non-smoke) runs of ``experiment``, oldest first."""
    runs = store.list_runs() if runs is None else runs
    out = {}
    for run in runs:
        if run.experiment == experiment:
            out.setdefault(run.preset, []).append(run)
    return out


def _terminal_phase(runs) -> tuple:
    """Chapter 1's criterion (issue 11): the training error reaches zero and stays there, NC1 falls
    at least 10x within that phase, and the NCC mismatch ends below 1%."""
    from .train import tpt_summary

    n, stable, collapsed = 0, 0, 0
    for run in runs:
        n += 1
        s = tpt_summary(run.table("history"))
        if s["tpt_stable_epoch"] is None:
            continue
        stable += 1
        collapsed += s["nc1_drop"] >= 10 and s["ncc_mismatch_end"] < 0.01
    word = "holds" if n and stable == collapsed == n else "partly" if collapsed else "does not hold"
    return word, (f"training error stays zero to the end in {stable} of {n} runs; within that phase NC1 "
                  f"falls at least 10x and the NCC mismatch ends below 1% in {collapsed} of {n}")


def _ufm(runs) -> tuple:
    run = runs[-1]
    seeds, hess = run.table("seeds"), run.table("hessian")
    saddles = hess[~hess.point.str.startswith("global")]
    reached = int((seeds.gap.abs() < 1e-9).sum())
    strict = int((saddles.min_eig < -1e-5).sum())
    ok = reached == len(seeds) and strict == len(saddles)
    return ("holds" if ok else "deviates",
            f"{reached} of {len(seeds)} random starts reach the closed-form optimum (within 1e-9); "
            f"{strict} of {len(saddles)} constructed critical points are strict saddles")


def _fixed_etf(runs, tolerance: float = 0.02) -> tuple:
    """Chapter 3's criterion: per dataset, the paired difference in final test error of the fixed-ETF
    d = K network minus the learned default-d baseline of the same seed, mean and 95% t-interval over
    seeds; "holds" when every interval's upper end is at most ``tolerance`` (the runs exclude a cost
    larger than that), "consistent with no cost" when every mean is, "deviates" otherwise."""
    err, saving = {}, []
    for run in runs:
        cfg, summ = run.info["config"], run.info["summary"]
        if "final_test_error" in summ:
            key = (cfg.get("dataset"), cfg.get("classifier", "learned"), cfg.get("feature_dim"), cfg.get("seed"))
            err[key] = summ["final_test_error"]
        saving += [v for k, v in summ.items() if k.startswith("total_saving")]
    parts, ups, means = [], [], []
    for ds in sorted({k[0] for k in err}):
        seeds = sorted(k[3] for k in err if k[:3] == (ds, "learned", None) and (ds, "etf", 10, k[3]) in err)
        if not seeds:
            continue
        mean, half = t_interval([err[ds, "etf", 10, s] - err[ds, "learned", None, s] for s in seeds])
        means.append(mean)
        ups.append(mean + half)
        parts.append(f"{ds}: fixed ETF d = K minus learned, test error {100 * mean:+.2f} points"
                     + (f" [{100 * (mean - half):+.2f}, {100 * (mean + half):+.2f}]" if len(seeds) > 1 else "")
                     + f" over {len(seeds)} seeds")
    if not parts:
        return "pending", "no pair of learned / fixed-ETF runs yet"
    text = "; ".join(parts)
    if saving:
        text += f"; memory saved by the whole step at batch 128: {100 * min(saving):.0f}-{100 * max(saving):.0f}%"
    word = ("holds" if all(u <= tolerance for u in ups) else
            "consistent with no cost" if all(m <= tolerance for m in means) else "deviates")
    return word, text + (f" (criterion: the 95% interval excludes a cost above {100 * tolerance:.0f} points)")


def _camvid_cr(runs) -> tuple:
    """Chapter 4's criterion: the diagnosis (the baseline's class centers are far from an ETF) and the
    remedy, as the paired difference (same seed) of the main center-collapse arm minus the baseline
    in test mIoU and in the rare classes' mean IoU, mean and 95% t-interval over seeds. The main arm
    is the authors' head (``ceco``) once its runs exist, else the simplified branch (``cr``)."""
    by_label = {run.label: run for run in runs}
    arm = "ceco" if any(label.startswith("ceco-s") for label in by_label) else "cr"
    pairs = [(by_label[f"baseline-s{s}"], by_label[f"{arm}-s{s}"]) for s in range(100)
             if f"baseline-s{s}" in by_label and f"{arm}-s{s}" in by_label]
    if not pairs:
        return "pending", f"no pair of baseline / {arm} runs yet"
    gaps = []
    for base, _ in pairs:
        col = base.table("collapse").query("split == 'train' and branch == 'features'")
        gaps.append(float(col["maxangle_means"].iloc[0]))
    parts, excluded = [], []
    for key, what in (("test_miou", "mIoU"), ("test_rare_miou", "rare classes")):
        m, h = t_interval([c.info["summary"][key] - b.info["summary"][key] for b, c in pairs])
        parts.append(f"{what} {m:+.3f}" + (f" [{m - h:+.3f}, {m + h:+.3f}]" if math.isfinite(h) else ""))
        excluded.append(math.isfinite(h) and m - h > 0)
    diagnosis = min(gaps) > 0.05
    word = ("diagnosis holds; " if diagnosis else "diagnosis deviates; ") + \
        ("remedy helps (an interval excludes 0)" if any(excluded) else "remedy consistent with no effect")
    return word, (f"centers far from an ETF (max-angle gap ≥ {min(gaps):.2f}, 0 for an ETF); {arm} minus "
                  f"baseline over {len(pairs)} paired seeds: " + ", ".join(parts) + " (95% intervals)")


def _nc_ood(runs) -> tuple:
    """Chapter 6's criteria (issue 15). Correlations: over the conv layers of each plain network, the
    Pearson R of collapse (-log10 NC1) with detection (mean near/far AUROC) is positive and with
    transfer (mean near/far probe accuracy) negative, the paper's signs, each with a 95% interval over
    seeds. Method: paired by seed, the ETF projector's detection and the entropy regularizer's transfer
    minus the plain network's, with 95% intervals."""
    from .ood import layer_correlations

    r_det, r_gen, by = [], [], {}
    for run in runs:
        cfg, summ = run.info["config"], run.info["summary"]
        arm = ("entropy" if cfg.get("alpha") else "plain") if not cfg.get("projector") else \
            ("both" if cfg.get("alpha") else "etf")
        if "auroc_near" in summ:
            by[arm, cfg.get("seed")] = summ
        if arm != "plain":
            continue
        r = layer_correlations(run.table("layers"))
        r_det.append(r["r_detection"])
        r_gen.append(r["r_transfer"])
    if not r_det:
        return "pending", "no plain network yet"
    (md, hd), (mg, hg) = t_interval(r_det), t_interval(r_gen)
    excl = lambda m, h: math.isfinite(h) and abs(m) > h  # noqa: E731
    signs = md > 0 and mg < 0
    word = ("correlations hold" if signs and excl(md, hd) and excl(mg, hg) else
            "correlations: signs hold, an interval includes 0" if signs else "correlations deviate")
    text = (f"over the conv layers of {len(r_det)} plain networks, R(collapse, detection) = {md:+.2f} ± {hd:.2f} "
            f"(paper +0.77), R(collapse, transfer) = {mg:+.2f} ± {hg:.2f} (paper -0.60)")
    parts, verdicts = [], []
    for arm, key, what in (("etf", "auroc", "ETF projector, detection AUROC"),
                           ("entropy", "transfer", "entropy regularizer, transfer accuracy")):
        seeds = sorted(s for a, s in by if a == arm and ("plain", s) in by)
        if not seeds:
            continue
        d = [(by[arm, s][f"{key}_near"] + by[arm, s][f"{key}_far"]
              - by["plain", s][f"{key}_near"] - by["plain", s][f"{key}_far"]) / 2 for s in seeds]
        m, h = t_interval(d)
        parts.append(f"{what} minus plain {m:+.3f}" + (f" [{m - h:+.3f}, {m + h:+.3f}]" if math.isfinite(h) else ""))
        verdicts.append("helps" if excl(m, h) and m > 0 else "hurts" if excl(m, h) else "no effect")
    if verdicts:
        word += "; method " + ("helps" if set(verdicts) == {"helps"} else "hurts here" if "hurts" in verdicts
                               else "consistent with no effect")
        text += "; " + "; ".join(parts) + " (paired over seeds)"
    return word, text + "; criterion: the paper's signs with 95% intervals excluding 0"


def _minority_collapse(runs) -> tuple:
    """Chapter 5's criteria (issue 14). The model: its minority classifiers form the simplex-ETF
    value -1/(K-1) at R = 1 and coincide (cosine 1) at the largest R. The networks: for each
    (dataset, network) swept over R, the minority classifiers' mean cosine rises by at least 0.3 from
    R = 1 to the largest R and the minority test accuracy falls (seed 0's sweep). The remedies are
    reported as their minority test accuracy minus the plain run's at the same R, paired by seed, with
    the 95% t-interval where there are several seeds; with several seeds the verdict also says whether
    an interval excludes 0, and in which direction."""
    import re

    parts, model_ok = [], None
    model = next((r for r in runs if r.label == "model"), None)
    if model is not None:
        sweep, K = model.table("sweep"), int(model.info["config"]["K"])
        first, last = sweep.iloc[0], sweep.iloc[-1]
        model_ok = bool(np.isclose(first["R"], 1.0) and abs(first["minority_cosine"] + 1 / (K - 1)) < 1e-4
                        and last["minority_cosine"] > 1 - 1e-4)
        parts.append(f"model: minority cosine {first['minority_cosine']:+.3f} at R = 1 (ETF {-1 / (K - 1):+.3f}), "
                     f"{last['minority_cosine']:.4f} at R = {last['R']:g}, complete from R ≈ "
                     f"{model.info['summary']['collapse_threshold']:.3g}")
    sweeps, at_r = {}, {}  # the sweep over R at seed 0; every seed's runs by (dataset, arch, R, remedy)
    for run in runs:
        m = re.fullmatch(r"(.+)-(.+)-R(\d+)(?:-(os\d+|etf))?-s(\d+)", run.label or "")
        if m is None:
            continue
        dataset, arch, ratio, remedy, seed = m.group(1), m.group(2), int(m.group(3)), m.group(4), int(m.group(5))
        if remedy is None and seed == 0:
            sweeps.setdefault((dataset, arch), {})[ratio] = run.info["summary"]
        at_r.setdefault((dataset, arch, ratio, remedy or "none"), {})[seed] = run.info["summary"]
    shows, nets = [], []
    for (dataset, arch), by_r in sorted(sweeps.items()):
        if 1 not in by_r or len(by_r) < 2:
            continue
        lo, hi = by_r[1], by_r[max(by_r)]
        ok = hi["minority_cosine"] >= lo["minority_cosine"] + 0.3 and hi["test_acc_minority"] < lo["test_acc_minority"]
        shows.append(ok)
        nets.append(f"{dataset} {arch}: cosine {lo['minority_cosine']:+.2f} → {hi['minority_cosine']:+.2f}, minority "
                    f"accuracy {lo['test_acc_minority']:.2f} → {hi['test_acc_minority']:.2f} (R = 1 → {max(by_r)})")
    fixes, helps, hurts = [], [], []  # each remedy minus the plain run at the same R, paired by seed
    for (dataset, arch, r, remedy), by_seed in sorted(at_r.items()):
        plain = at_r.get((dataset, arch, r, "none"), {})
        diff = [by_seed[s]["test_acc_minority"] - plain[s]["test_acc_minority"] for s in sorted(by_seed) if s in plain]
        if remedy == "none" or not diff:
            continue
        mean, half = t_interval(diff)
        spread = (f" [{mean - half:+.2f}, {mean + half:+.2f}], {len(diff)} seeds" if len(diff) > 1 else ", one seed")
        if len(diff) > 1:  # only an interval can say a remedy helps or hurts
            helps.append(mean - half > 0)
            hurts.append(mean + half < 0)
        fixes.append(f"{remedy} at R = {r} on {dataset} {arch}: minority accuracy {mean:+.2f}{spread}")
    if model_ok is None and not shows:
        return "pending", "no model run and no network swept from R = 1 yet"
    if model_ok is False:
        word = "model deviates"
    elif not shows:
        word = "model holds; networks pending"
    else:
        word = ("holds" if all(shows) else "partly" if any(shows) else "networks deviate") + \
            ("" if model_ok else "; model pending")
    if helps:
        word += ("; remedies mixed (intervals exclude 0 both ways)" if any(helps) and any(hurts) else
                 "; a remedy helps (an interval excludes 0)" if any(helps) else
                 "; a remedy hurts minority accuracy (an interval excludes 0)" if any(hurts) else
                 "; remedies: no effect resolved (every interval includes 0)")
    text = "; ".join(parts + nets)
    if fixes:
        text += "; remedies (paired by seed, 95% interval): " + ", ".join(fixes)
    return word, text


VERDICTS = {"terminal_phase": _terminal_phase, "ufm": _ufm, "fixed_etf": _fixed_etf, "camvid_cr": _camvid_cr,
            "minority_collapse": _minority_collapse, "nc_ood": _nc_ood}


def chapter_state(experiment: str, runs=None) -> list:
    """One dict per preset (``cpu``, ``paper``) of ``experiment``: runs, compute, verdict or pending."""
    by_preset = chapter_runs(experiment, runs)
    rows = []
    for preset in config.PRESETS[experiment]:
        if preset == "smoke":
            continue
        got = by_preset.get(preset, [])
        hours = sum(float(r.info["wall_seconds"]) for r in got) / 3600
        if not got:
            where = "a GPU" if preset == "paper" else "a CPU run"
            rows.append({"preset": preset, "runs": 0, "compute (h)": 0.0, "verdict": "pending",
                         "what the runs show": f"{preset} preset: pending {where}"})
            continue
        try:
            word, text = VERDICTS[experiment](got)
        except (KeyError, FileNotFoundError, ValueError) as e:  # a run without the table a verdict needs
            word, text = "not computed", f"{type(e).__name__}: {e}"
        devices = sorted({short_device(r.info["device"]) for r in got})
        rows.append({"preset": preset, "runs": len(got), "compute (h)": round(hours, 2), "verdict": word,
                     "what the runs show": text + f" [{', '.join(devices)}]"})
    return rows


def status_frame(runs=None):
    """The book's state: one row per chapter and preset, in chapter order."""
    import pandas as pd

    runs = store.list_runs() if runs is None else runs
    rows = []
    for doc, title, experiment in CHAPTERS:
        for row in chapter_state(experiment, runs):
            rows.append({"chapter": title, **row})
    return pd.DataFrame(rows)


def runs_frame(runs=None):
    """Every committed run in chapter order: chapter, compact provenance (see ``plotting.provenance_frame``)."""
    import pandas as pd

    from .plotting import provenance_frame

    runs = store.list_runs() if runs is None else runs
    frames = []
    for doc, title, experiment in CHAPTERS:
        mine = [r for r in runs if r.experiment == experiment]
        if mine:
            frame = provenance_frame(mine)
            frame.insert(0, "chapter", title.split(".")[0])
            frames.append(frame)
    known = {experiment for _, _, experiment in CHAPTERS}
    others = [r for r in runs if r.experiment not in known]  # chapters in drafts/, not yet in the book
    if others:
        frame = provenance_frame(others)
        frame.insert(0, "chapter", "draft: " + pd.Series([r.experiment for r in others]))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
