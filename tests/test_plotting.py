"""The shared table and figure helpers of ncutils.plotting, and the book status of ncutils.book."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ncutils import book, plotting, store


def test_display_label_reads_stored_labels_without_changing_them():
    assert plotting.display_label("mnist-learned-ddefault-s0") == "MNIST, learned, default d, seed 0"
    assert plotting.display_label("fashionmnist-etf-d10-s2") == "FashionMNIST, etf, d = 10, seed 2"
    assert plotting.display_label("cr-lam0.2-s0") == "cr, λ = 0.2, seed 0"
    assert plotting.display_label("mnist-mlp-s0") == "MNIST, MLP, seed 0"
    assert "ddefault" not in plotting.display_label("x-ddefault")


def test_short_device():
    assert plotting.short_device("CPU: Intel(R) Xeon(R) Processor (2 cores)") == "CPU, Xeon (2 cores)"
    assert plotting.short_device("NVIDIA H200") == "H200"
    assert plotting.short_device("CPU: AMD EPYC 7B13 64-Core Processor (16 cores)").startswith("CPU, EPYC 7B13")


def test_style_table_formats_by_column_kind_and_hides_the_index():
    frame = pd.DataFrame({"nc1": [0.017361, 2.5e-9], "train_error": [0.0, 0.0125], "samples": [1000, 20],
                          "name": ["a", "b"]})
    html = plotting.style_table(frame, percent=["train_error"]).to_html()
    for text in (">NC1<", ">train error<", ">0.0174<", ">2.50e-09<", ">1.2%<", ">1,000<", "padding"):
        assert text in html, text
    assert "row_heading" not in html and "0.017361" not in html
    assert "td.col3 {" in html and html.count("white-space: normal") >= 3  # the text column wraps
    with pytest.raises(ValueError, match="percent/formats"):
        plotting.style_table(frame, percent=["nope"])
    with pytest.raises(ValueError, match="max_columns"):
        plotting.style_table(pd.DataFrame(np.zeros((2, 9))))
    with pytest.raises(TypeError, match="frame"):
        plotting.style_table([1, 2])


class FakeRun:
    def __init__(self, path, info):
        self.path, self.info, self.label = Path(path), info, info["label"]
        self.experiment, self.preset = info["experiment"], info["preset"]


def fake(label, commit, minutes=6.0):
    return FakeRun(f"/x/{label}", {"experiment": "e", "preset": "cpu", "label": label, "commit": commit,
                                   "device": "CPU: Intel(R) Xeon(R) Processor (2 cores)", "torch": "2.13.0+cu130",
                                   "wall_seconds": minutes * 60, "finished": "2026-11-23T13:22:04+00:00"})


def test_provenance_is_compact_and_flags_dirty_runs():
    runs = [fake("mnist-etf-ddefault-s0", "3403b0e55487+dirty"), fake("landscape", "65aafec795d6")]
    frame = plotting.provenance_frame(runs)
    assert list(frame["commit"]) == ["3403b0e+dirty", "65aafec"] and list(frame["dirty"]) == [True, False]
    assert list(frame["date"]) == ["2026-11-23"] * 2 and frame["torch"].iloc[0] == "2.13.0"
    assert frame["run"].iloc[0] == "MNIST, etf, default d, seed 0"
    html = plotting.provenance_table(runs).to_html()
    assert "1 of 2 runs carry" in html and "uncommitted changes" in html and "row_heading" not in html
    assert "carry" not in plotting.provenance_table(runs[1:]).to_html()


def test_new_figure_fits_the_content_column():
    fig, axes = plotting.new_figure(4, 1, width=2.6, height=2.4)
    w, h = fig.get_size_inches()
    assert w == pytest.approx(plotting.MAX_WIDTH) and h == pytest.approx(2.4 * plotting.MAX_WIDTH / 10.4)
    fig, _ = plotting.new_figure(2, 1, width=3.0, height=2.0)
    assert tuple(fig.get_size_inches()) == pytest.approx((6.0, 2.0))


def test_t_interval_and_seed_points():
    mean, half = plotting.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 * 1.0 / np.sqrt(3))
    assert np.isnan(plotting.t_interval([5.0])[1])
    data = pd.DataFrame({"x": ["a", "a", "b", "b"] * 2, "v": ["p"] * 4 + ["q"] * 4, "y": np.arange(8.0)})
    fig, axes = plotting.new_figure()
    plotting.seed_points(axes[0, 0], data, "x", "y", "v", palette={"p": "C0", "q": "C3"})
    bars = [c for c in axes[0, 0].containers]
    assert len(bars) == 2  # one errorbar container per hue
    fig, axes = plotting.new_figure()
    with pytest.raises(ValueError, match="square"):
        plotting.cosine_heatmap(axes[0, 0], np.eye(3), ["a", "b"])
    plotting.cosine_heatmap(axes[0, 0], np.eye(3) - 0.5 * (1 - np.eye(3)), ["a", "b", "c"])
    texts = [t.get_text() for t in axes[0, 0].texts]
    assert texts.count("1") == 3 and texts.count("-.50") == 6


def test_book_status_counts_committed_runs_and_pending_presets(results_dir):
    run = store.Run("ufm", "cpu", {"K": 3}, label="landscape")
    run.path.mkdir(parents=True)
    pd.DataFrame({"gap": [0.0, 1e-12], "seeds": [0, 1]}).to_csv(run.path / "seeds.csv", index=False)
    pd.DataFrame({"point": ["origin", "global (solver)"], "min_eig": [-0.01, 1e-12]}).to_csv(
        run.path / "hessian.csv", index=False)
    (run.path / "run.json").write_text(json.dumps({
        "experiment": "ufm", "preset": "cpu", "label": "landscape", "config": {"K": 3}, "config_hash": run.key,
        "wall_seconds": 3600.0, "commit": "abc", "device": "CPU: x (2 cores)", "torch": "2", "finished": "2026",
        "summary": {}}))
    state = book.status_frame()
    ufm = state[state.chapter.str.startswith("2.")].set_index("preset")
    assert ufm.loc["cpu", "runs"] == 1 and ufm.loc["cpu", "compute (h)"] == 1.0
    assert ufm.loc["cpu", "verdict"] == "holds" and "2 of 2 random starts" in ufm.loc["cpu", "what the runs show"]
    assert ufm.loc["paper", "verdict"] == "pending" and "pending a GPU" in ufm.loc["paper", "what the runs show"]
    assert (state[~state.chapter.str.startswith("2.")].verdict == "pending").all()
    assert list(book.runs_frame()["chapter"]) == ["2"]


def test_the_chapter_3_verdict_pairs_seeds_and_reads_the_interval(results_dir):
    def planted(seed, classifier, feature_dim, error):
        cfg = {"dataset": "mnist", "classifier": classifier, "feature_dim": feature_dim, "seed": seed}
        run = store.Run("fixed_etf", "cpu", cfg, label=f"{classifier}-{feature_dim}-s{seed}")
        run.path.mkdir(parents=True)
        (run.path / "run.json").write_text(json.dumps({
            "experiment": "fixed_etf", "preset": "cpu", "label": run.label, "config": cfg, "config_hash": run.key,
            "wall_seconds": 1.0, "commit": "abc", "device": "cpu", "torch": "2", "finished": "2026",
            "summary": {"final_test_error": error}}))
        return run

    base = [planted(s, "learned", None, 0.10 + 0.01 * s) for s in range(3)]
    close = [planted(s, "etf", 10, 0.10 + 0.01 * s + 0.001 * (s - 1)) for s in range(3)]  # gaps -0.1, 0, +0.1 pt
    word, text = book.VERDICTS["fixed_etf"](base + close)
    assert word == "holds" and "+0.00 points" in text and "over 3 seeds" in text
    worse = [planted(s, "etf", 10, 0.15 + 0.01 * s + 0.001 * s) for s in range(3, 6)]
    worse_base = [planted(s, "learned", None, 0.10 + 0.01 * s) for s in range(3, 6)]
    assert book.VERDICTS["fixed_etf"](worse_base + worse)[0] == "deviates"
    assert book.VERDICTS["fixed_etf"](base)[0] == "pending"


def test_the_chapter_6_verdict_reads_the_signs_of_the_layer_correlations_of_plain_networks(results_dir):
    def planted(seed, detection_slope, arm_cfg, summary=None):
        nc1 = np.array([8.0, 2.0, 0.5, 0.1, 0.01])  # collapse grows with depth
        noise = np.random.default_rng(seed).normal(0, 1e-3, len(nc1))
        collapse = -np.log10(nc1)
        run = store.Run("nc_ood", "cpu", {"seed": seed, **arm_cfg}, label=f"x-s{seed}")
        run.path.mkdir(parents=True)
        pd.DataFrame({"layer": ["conv1", "conv2", "conv3", "encoder", "projector"], "nc1": nc1,
                      "auroc_near": 0.5 + detection_slope * collapse + noise, "auroc_far": 0.5 + detection_slope * collapse,
                      "transfer_near": 0.9 - 0.1 * collapse + noise, "transfer_far": 0.9 - 0.1 * collapse}).to_csv(
            run.path / "layers.csv", index=False)
        (run.path / "run.json").write_text(json.dumps({
            "experiment": "nc_ood", "preset": "cpu", "label": run.label, "config": {"seed": seed, **arm_cfg},
            "config_hash": run.key, "wall_seconds": 1.0, "commit": "abc", "device": "cpu", "torch": "2",
            "finished": "2026", "summary": summary or {}}))
        return run

    plain = [planted(s, 0.1, {"alpha": 0.0, "projector": False}) for s in range(3)]
    other = [planted(s, -0.1, {"alpha": 0.05, "projector": True}) for s in range(3)]  # ignored: not plain
    word, text = book.VERDICTS["nc_ood"](plain + other)
    assert word == "correlations hold" and "3 plain networks" in text and "R(collapse, detection) = +1.00" in text
    flipped = [planted(s + 10, -0.1, {"alpha": 0.0, "projector": False}) for s in range(3)]
    assert book.VERDICTS["nc_ood"](flipped)[0] == "correlations deviate"
    assert book.VERDICTS["nc_ood"](other)[0] == "pending"
    # the method: the ETF projector's detection and the entropy regularizer's transfer, paired with plain
    numbers = lambda auroc, transfer: {"auroc_near": auroc, "auroc_far": auroc,  # noqa: E731
                                       "transfer_near": transfer, "transfer_far": transfer}
    base = [planted(s + 20, 0.1, {"alpha": 0.0, "projector": False}, numbers(0.8 + 0.01 * s, 0.7)) for s in range(3)]
    etf = [planted(s + 20, 0.1, {"alpha": 0.0, "projector": True}, numbers(0.9 + 0.01 * s + 0.001 * s * s, 0.7))
           for s in range(3)]
    ent = [planted(s + 20, 0.1, {"alpha": 0.05, "projector": False}, numbers(0.8, 0.75 + 0.001 * s)) for s in range(3)]
    word, text = book.VERDICTS["nc_ood"](base + etf + ent)
    assert word == "correlations hold; method helps" and "ETF projector, detection AUROC minus plain +0.10" in text
    base2 = [planted(s + 30, 0.1, {"alpha": 0.0, "projector": False}, numbers(0.8 + 0.01 * s, 0.7)) for s in range(3)]
    worse = [planted(s + 30, 0.1, {"alpha": 0.0, "projector": True}, numbers(0.6 + 0.001 * s * s, 0.7)) for s in range(3)]
    assert book.VERDICTS["nc_ood"](base2 + worse)[0] == "correlations hold; method hurts here"


def test_the_chapter_5_verdict_reads_the_model_and_each_network_sweep(results_dir):
    def planted(label, cfg, summary, sweep=None):
        run = store.Run("minority_collapse", "cpu", cfg, label=label)
        run.path.mkdir(parents=True)
        if sweep is not None:
            sweep.to_csv(run.path / "sweep.csv", index=False)
        (run.path / "run.json").write_text(json.dumps({
            "experiment": "minority_collapse", "preset": "cpu", "label": label, "config": cfg,
            "config_hash": run.key, "wall_seconds": 1.0, "commit": "abc", "device": "cpu", "torch": "2",
            "finished": "2026", "summary": summary}))
        return run

    sweep = pd.DataFrame({"R": [1.0, 10.0, 100.0], "minority_cosine": [-1 / 9, 0.4, 1.0]})
    model = planted("model", {"K": 10}, {"collapse_threshold": 12.19}, sweep)
    net = lambda label, cos, acc: planted(label, {"label": label}, {"minority_cosine": cos,  # noqa: E731
                                                                    "test_acc_minority": acc})
    collapsing = [net("mnist-mlp-R1-s0", -0.11, 0.97), net("mnist-mlp-R100-s0", 0.9, 0.05)]
    fix = [net("mnist-mlp-R100-etf-s0", -0.11, 0.25)]
    word, text = book.VERDICTS["minority_collapse"]([model, *collapsing, *fix])
    assert word == "holds" and "complete from R ≈ 12.2" in text
    assert "mnist mlp: cosine -0.11 → +0.90, minority accuracy 0.97 → 0.05 (R = 1 → 100)" in text
    assert "etf at R = 100 on mnist mlp: minority accuracy +0.20, one seed" in text
    # several seeds: paired by seed (a plain run at seed 1 does not enter the sweep over R)
    seeded = [net("mnist-mlp-R100-s1", 0.95, 0.10), net("mnist-mlp-R100-etf-s1", -0.11, 0.40),
              net("mnist-mlp-R100-s2", 0.95, 0.07), net("mnist-mlp-R100-etf-s2", -0.11, 0.30)]
    word, text = book.VERDICTS["minority_collapse"]([model, *collapsing, *fix, *seeded])
    diffs = [0.20, 0.30, 0.23]
    half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert word == "holds; a remedy helps (an interval excludes 0)" and "accuracy 0.97 → 0.05 (R = 1 → 100)" in text
    assert (f"etf at R = 100 on mnist mlp: minority accuracy {np.mean(diffs):+.2f} "
            f"[{np.mean(diffs) - half:+.2f}, {np.mean(diffs) + half:+.2f}], 3 seeds") in text
    # a remedy that lowers the minority accuracy on every seed is called so; an interval across 0 is not
    worse = [net("mnist-mlp-R100-os100-s0", -0.1, 0.01), net("mnist-mlp-R100-os100-s1", -0.1, 0.02),
             net("mnist-mlp-R100-os100-s2", -0.1, 0.0)]
    assert book.VERDICTS["minority_collapse"]([model, *collapsing, *seeded[::2], *worse])[0] == \
        "holds; a remedy hurts minority accuracy (an interval excludes 0)"
    unclear = [net("mnist-mlp-R100-os10-s1", -0.1, 0.5), net("mnist-mlp-R100-os10-s2", -0.1, 0.0)]
    assert book.VERDICTS["minority_collapse"]([model, *collapsing, *fix, *seeded[::2], *unclear])[0] == \
        "holds; remedies: no effect resolved (every interval includes 0)"
    assert book.VERDICTS["minority_collapse"]([model, *collapsing, *seeded, *worse, *fix])[0] == \
        "holds; remedies mixed (intervals exclude 0 both ways)"
    flat = [net("fashionmnist-vgg11-R1-s0", -0.11, 0.9), net("fashionmnist-vgg11-R100-s0", -0.05, 0.6)]
    assert book.VERDICTS["minority_collapse"]([model, *collapsing, *flat])[0] == "partly"
    assert book.VERDICTS["minority_collapse"]([model])[0] == "model holds; networks pending"
    assert book.VERDICTS["minority_collapse"](fix)[0] == "pending"  # no R = 1 run to compare with
    broken = planted("model", {"K": 10, "x": 1}, {"collapse_threshold": 12.19},
                     pd.DataFrame({"R": [1.0, 100.0], "minority_cosine": [0.2, 1.0]}))
    assert book.VERDICTS["minority_collapse"]([broken, *collapsing])[0] == "model deviates"
