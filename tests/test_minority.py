import math

import numpy as np
import pytest
import torch

from ncutils import minority, models, store, train


def test_counts_and_bad_arguments():
    assert minority.counts_for(1000, 10) == [1000] * 5 + [100] * 5
    assert minority.counts_for(1000, 1000) == [1000] * 5 + [1] * 5
    with pytest.raises(ValueError, match="^n_major=20 // ratio=100 leaves no image"):
        minority.counts_for(20, 100)
    with pytest.raises(ValueError, match="^ratio "):
        minority.counts_for(20, 0)
    with pytest.raises(ValueError, match="^K_A must be <= K"):
        minority.counts_for(20, 2, K=4, K_A=5)


def test_cpu_preset_runs_have_equal_steps_and_the_remedies():
    cfgs = minority.network_configs("cpu")
    variants = {k[2] for k in cfgs}
    assert {"R1", "R10", "R100", "R1000", "R1000-os1000", "R1000-etf"} <= variants
    for (dataset, arch, variant), (label, cfg) in cfgs.items():
        assert cfg["momentum"] == 0.9 and cfg["weight_decay"] == 5e-4 and cfg["batch_size"] == 128
        assert cfg["lr_milestones"] == (1 / 3, 2 / 3) and cfg["augment"] is False
        n_eff = sum(c * f for c, f in zip(cfg["counts"], cfg.get("oversample") or [1] * 10))
        steps = cfg["epochs"] * math.ceil(n_eff / 128)
        assert abs(steps - cfg["steps"]) <= math.ceil(n_eff / 128), (label, steps)
        r = int(variant.split("-")[0][1:])
        assert cfg["counts"] == [1000] * 5 + [1000 // r] * 5
        if variant.endswith("-etf"):
            assert cfg["classifier"] == "etf"
        if "-os" in variant:
            assert cfg["oversample"] == [1] * 5 + [1000] * 5
    est = minority.cost_estimate("cpu")
    assert len(est) == len(cfgs) + len(minority.remedy_seed_configs("cpu")) - len(
        [k for k in minority.remedy_seed_configs("cpu") if k[3] == 0])
    assert all(r["seconds"] > r["steps"] * minority.STEP_SECONDS_CPU[r["arch"]] for r in est)


def test_remedy_seeds_are_the_remedy_runs_at_other_seeds(monkeypatch):
    seeded = minority.remedy_seed_configs("cpu")
    assert {k[3] for k in seeded} == {0, 1, 2}
    assert {k[:3] for k in seeded} == {("fashionmnist", "mlp", v) for v in ("R1000", "R1000-os1000", "R1000-etf")}
    base = minority.network_configs("cpu", 0)
    for (dataset, arch, variant, seed), (label, cfg) in seeded.items():
        label0, cfg0 = base[(dataset, arch, variant)]
        assert label == label0[:-2] + f"s{seed}"
        if seed == 0:  # seed 0's runs are the sweep's own (same config hash)
            assert cfg == cfg0
        else:  # the same run at another seed, with the training error evaluated every 10th epoch
            assert cfg == {**cfg0, "seed": seed, "train_eval_every": 10}
    net = dict(minority._config.get_preset("minority_collapse", "cpu")["networks"])
    bad = dict(net, remedy_seeds_for=(("fashionmnist", "vgg11"),))
    monkeypatch.setitem(minority._config.PRESETS["minority_collapse"], "cpu",
                        dict(minority._config.PRESETS["minority_collapse"]["cpu"], networks=bad))
    with pytest.raises(ValueError, match="^remedy_seeds_for=.*vgg11.* has no remedies; choose from remedies_for="):
        minority.remedy_seed_configs("cpu")
    training = dict(net, seed_overrides={"lr": 0.1})  # would change training: refused
    monkeypatch.setitem(minority._config.PRESETS["minority_collapse"], "cpu",
                        dict(minority._config.PRESETS["minority_collapse"]["cpu"], networks=training))
    with pytest.raises(ValueError, match="seed_overrides .* may only set train_eval_every"):
        minority.network_configs("cpu", seed=1)
    assert minority.network_configs("cpu", seed=0)  # seed 0 takes no overrides


def test_group_metrics_on_known_vectors():
    # majority classifiers: a simplex (cos -1/4 within 5 unit vectors of an ETF); minority: all equal
    etf = np.linalg.cholesky(5 / 4 * np.eye(5) - 1 / 4 * np.ones((5, 5)) + 1e-12 * np.eye(5))
    W = np.zeros((10, 6))
    W[:5, :5] = etf
    W[5:, 5] = 2.0
    means = W * 3 + 7.0  # a common shift, removed by the global mean
    correct = np.array([10] * 5 + [1, 2, 3, 4, 0])
    total = np.array([10] * 10)
    out = minority.group_metrics(W, means, np.full(6, 7.0), correct, total, 5)
    assert out["majority_cosine"] == pytest.approx(-0.25)
    assert out["minority_cosine"] == pytest.approx(1.0)
    assert out["majority_mean_cosine"] == pytest.approx(-0.25)
    assert out["test_acc_majority"] == 1.0 and out["test_acc_minority"] == pytest.approx(0.2)
    assert out["E_W"] == pytest.approx((5 * 1 + 5 * 4) / 10)
    with pytest.raises(ValueError, match="^K_A must be"):
        minority.group_metrics(W, means, np.zeros(6), correct, total, 9)
    with pytest.raises(ValueError, match="per_class_total"):
        minority.group_metrics(W, means, np.zeros(6), correct, np.zeros(10), 5)


def test_oversample_repeats_the_named_classes_and_refuses_bad_factors():
    x = torch.arange(6.0)[:, None]
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    xs, ys = train.oversample(x, y, [1, 1, 3])
    assert torch.bincount(ys).tolist() == [2, 2, 6]
    assert sorted(xs[ys == 2, 0].tolist()) == [4.0] * 3 + [5.0] * 3
    assert train.oversample(x, y, None)[0] is x
    for bad in ([1, 1], [1, 0, 2], [1, 1, 2.0], "abc"):
        with pytest.raises(ValueError, match=r"config\['oversample'\]"):
            train.oversample(x, y, bad)


def test_measure_model_on_a_hand_built_network():
    torch.manual_seed(0)
    model = models.build_model("mlp", num_classes=10, input_size=4, width=8, depth=1)
    x = torch.randn(40, 1, 4, 4)
    y = torch.arange(10).repeat(4)
    summary, rows, arrays = minority.measure_model(model, x, y, x, y, K_A=5)
    model.eval()
    with torch.no_grad():
        logits, h = model.logits_and_features(x)
    acc = (logits.argmax(1) == y).double()
    assert summary["test_acc"] == pytest.approx(float(acc.mean()))
    assert summary["test_acc_minority"] == pytest.approx(float(acc[y >= 5].mean()))
    assert [r["test_acc"] for r in rows] == pytest.approx([float(acc[y == k].mean()) for k in range(10)])
    np.testing.assert_allclose(arrays["global_mean"], h.double().mean(0).numpy(), rtol=1e-10)
    W = model.classifier.weight.detach().double().numpy()
    cos = (W[5:] @ W[5:].T) / np.outer(np.linalg.norm(W[5:], axis=1), np.linalg.norm(W[5:], axis=1))
    assert summary["minority_cosine"] == pytest.approx(cos[~np.eye(5, dtype=bool)].mean())
    centered = (h.double() - h.double().mean(0)).square().sum(1)
    assert summary["E_H"] == pytest.approx(float(torch.stack([centered[y == k].mean() for k in range(10)]).mean()))


def test_smoke_network_run_trains_and_measures(real_data, results_dir):
    runs = minority.run_networks("smoke", only=("fashionmnist:mlp:R10", ("fashionmnist", "mlp", "R10-os10")))
    assert set(runs) == {("fashionmnist", "mlp", "R10"), ("fashionmnist", "mlp", "R10-os10")}
    for run in runs.values():
        assert run.complete
        s = run.info["summary"]
        assert -1 <= s["minority_cosine"] <= 1 and 0 <= s["test_acc_minority"] <= 1
        per = run.table("per_class")
        assert per["n_train"].tolist() == [20] * 5 + [2] * 5
        assert run.arrays("last_layer")["weight"].shape == (10, 32)
    with pytest.raises(ValueError, match="names no run"):
        minority.run_networks("smoke", only=("fashionmnist:mlp:R3",))
    assert store.list_runs("minority_collapse", include_smoke=True)


def test_only_refuses_unknown_keys_and_bare_strings():
    """Both loaders check ``only`` against chapter 5's runs before anything is loaded or trained."""
    for fn in (minority.run_networks, minority.run_remedy_seeds):
        with pytest.raises(ValueError, match=r"only=\['mnist:mlp:R7'\] names no run"):
            fn("smoke", only=("mnist:mlp:R7",))
        with pytest.raises(TypeError, match="single string"):
            fn("smoke", only="fashionmnist:mlp:R10")
