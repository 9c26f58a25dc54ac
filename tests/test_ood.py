"""Chapter 6's pieces: entropy regularizer, fixed ETF projector, layer hooks, OOD metrics, probes."""
import math

import numpy as np
import pytest
import torch

from ncutils import config, metrics, ood, ood_model, ood_train, store, train


# ----------------------------------------------------------------------------- entropy regularizer

def test_entropy_term_on_a_planted_batch_equals_its_formula():
    # Points on the unit circle at these angles, scaled to other norms: the term normalizes first.
    angles = torch.tensor([0.0, 0.3, 1.0, 2.5, -2.0], dtype=torch.float64)
    norms = torch.tensor([1.0, 3.0, 0.5, 7.0, 2.0], dtype=torch.float64)
    z = torch.stack([angles.cos(), angles.sin()], 1) * norms[:, None]
    # nearest neighbour on the circle: the smallest angular gap; chord = 2 sin(gap / 2)
    gaps = (angles[:, None] - angles[None, :]).abs()
    gaps = torch.minimum(gaps, 2 * math.pi - gaps)
    gaps.fill_diagonal_(float("inf"))
    expected = -torch.log(2 * torch.sin(gaps.min(1).values / 2)).mean()
    got = ood_model.entropy_regularizer(z)
    assert float(got) == pytest.approx(float(expected), abs=1e-6)
    # by hand for the first point: its neighbour is the one at 0.3 rad
    assert float(2 * math.sin(0.15)) == pytest.approx(float((z[0] / 1.0 - z[1] / 3.0).norm()), abs=1e-12)


def test_entropy_term_is_differentiable_and_spreading_lowers_it():
    z = torch.randn(16, 8, requires_grad=True)
    loss = ood_model.entropy_regularizer(z)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with torch.no_grad():
        spread = ood_model.entropy_regularizer(z - 0.1 * z.grad)
    assert float(spread) < float(loss.detach())


# ----------------------------------------------------------------------------- ETF projector

def test_projector_weights_are_the_authors_fixed_matrices_and_not_parameters():
    proj = ood_model.ETFProjector(6)
    c = 6
    w1 = math.sqrt(c / (c - 1)) * (torch.eye(24, 6) - torch.ones(24, 6) / c)
    w2 = math.sqrt(c / (c - 1)) * (torch.eye(6, 24) - torch.ones(6, 24) / c)
    assert torch.equal(proj.weight1, w1) and torch.equal(proj.weight2, w2)
    assert list(proj.parameters()) == []
    out = proj(torch.randn(10, 6))
    assert torch.allclose(out.norm(dim=1), torch.ones(10), atol=1e-6)


def test_projector_weights_never_change_in_training_bitwise():
    net = ood_model.build_ood_model("vgg11", 3, width=2, projector=True, seed=1)
    before = (net.projector.weight1.clone(), net.projector.weight2.clone())
    enc_before = net.encoder[1][0].weight.clone()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.05, weight_decay=0.05)
    x, y = torch.randn(12, 1, 28, 28), torch.arange(12) % 3
    for _ in range(3):
        h, _, logits = net.embed(x)
        loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1) \
            + 0.05 * ood_model.entropy_regularizer(h)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(net.encoder[1][0].weight, enc_before), "the encoder did train"
    assert torch.equal(net.projector.weight1, before[0]) and torch.equal(net.projector.weight2, before[1])


def test_projector_weights_unchanged_after_the_training_loop(real_data, results_dir):
    exp = config.get_preset("nc_ood", "smoke")
    exp.pop("arms"), exp.pop("seeds")
    cfg = {**exp, "alpha": 0.05, "projector": True, "seed": 0, "epochs": 2, "n_per_class": 8}
    run = store.Run("nc_ood", "smoke", cfg, "proj-test")
    out = ood_train.train_ood(run, cfg, device="cpu", progress=False, stop_after=1)
    assert out == {"complete": False, "epochs_done": 1}
    state = train.load_checkpoint(run.path / "checkpoint.pt")  # checks the sha256 header
    d = 8 * cfg["width"]
    assert torch.equal(state["model"]["projector.weight1"], ood_model.etf_projector_weight(4 * d, d, c=d))
    assert torch.equal(state["model"]["projector.weight2"], ood_model.etf_projector_weight(d, 4 * d, c=d))
    fresh = ood_model.build_ood_model("vgg11", 5, width=cfg["width"], projector=True, seed=0)
    assert not torch.equal(state["model"]["classifier.weight"], fresh.classifier.weight), "it trained"


def test_arms_share_initial_weights():
    a = ood_model.build_ood_model("vgg11", 5, width=2, projector=False, seed=7).state_dict()
    b = ood_model.build_ood_model("vgg11", 5, width=2, projector=True, seed=7).state_dict()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
    c = ood_model.build_ood_model("vgg11", 5, width=2, projector=False, seed=8).state_dict()
    assert not torch.equal(a["classifier.weight"], c["classifier.weight"])


# ----------------------------------------------------------------------------- hooks

def test_hooks_return_the_same_features_as_a_plain_forward_pass():
    """The authors' layers: every conv output before its BatchNorm (pooled to 2 x 2; the last one,
    ``encoder``, to 1 x 1), the pooled embedding, the projector before and after its L2 norm."""
    torch.manual_seed(0)
    net = ood_model.build_ood_model("vgg11", 5, width=2, projector=True, seed=0).eval()
    x = torch.randn(7, 1, 28, 28)
    layers, sides = net.layer_modules(), net.layer_pool_sides()
    assert list(layers)[-5:] == ["encoder", "embedding", "projector_hidden", "projector", "projector_normalized"]
    assert [n for n in layers if n.startswith("conv")] == [f"conv{i}" for i in range(1, 8)]  # VGG11: 8 convs
    pool = torch.nn.functional.adaptive_avg_pool2d
    with torch.no_grad(), ood.LayerFeatures(layers, sides) as hooks:
        got = hooks.run(net, x)
        conv_outputs, t = [], x
        for child in net.encoder.children():  # by hand: each block's conv output, then the block
            convs = [m for m in child.modules() if isinstance(m, torch.nn.Conv2d)]
            if convs:
                conv_outputs.append(convs[0](t))
            t = child(t)
        assert len(conv_outputs) == 8
        for i, out in enumerate(conv_outputs[:-1], start=1):
            side = 2 if out.shape[-1] >= 2 else 1
            assert torch.equal(got[f"conv{i}"], pool(out, side).flatten(1)), i
        assert torch.equal(got["encoder"], pool(conv_outputs[-1], 1).flatten(1))  # before BatchNorm
        assert not torch.equal(got["encoder"], net.encoder(x))
        h = net.encoder(x)
        assert torch.equal(got["embedding"], h) and torch.equal(t, h)
        hidden = torch.nn.functional.linear(h, net.projector.weight1)
        raw = torch.nn.functional.linear(torch.relu(hidden), net.projector.weight2)
        assert torch.equal(got["projector_hidden"], hidden)
        assert torch.equal(got["projector"], raw)  # before the L2 norm, as the authors' hook sees it
        assert not torch.allclose(raw.norm(dim=1), torch.ones(len(x)))
        assert torch.equal(got["projector_normalized"], net.projector(h))
        assert torch.allclose(got["projector_normalized"].norm(dim=1), torch.ones(len(x)))
        assert torch.equal(got["projector_normalized"], torch.nn.functional.normalize(raw, dim=-1, eps=1e-8))
    # the hooks are removed on exit
    assert all(not m._forward_hooks for m in layers.values())
    with pytest.raises(ValueError, match="pool_sides"):
        ood.LayerFeatures(layers, {"nope": 1})


def test_layer_stats_stream_the_same_statistics_as_all_features_at_once():
    net = ood_model.build_ood_model("vgg11", 3, width=2, seed=0)
    x, y = torch.randn(20, 1, 28, 28), torch.arange(20) % 3
    layers = net.layer_modules()
    stats = ood.layer_class_stats(net, layers, x, y, 3, batch_size=6)
    feats = ood.extract_layer_features(net, layers, x, batch_size=7)
    for name in layers:
        full = metrics.ClassStats(3).update(feats[name], y)
        assert torch.allclose(stats[name].means, full.means, atol=1e-5)
        assert torch.allclose(stats[name].scatter, full.scatter, atol=1e-4)


# ----------------------------------------------------------------------------- scores and metrics

def test_energy_score_is_logsumexp():
    logits = torch.tensor([[0.0, 0.0], [1.0, -2.0], [3.0, 3.0]])
    np.testing.assert_allclose(ood.energy_score(logits), torch.logsumexp(logits.double(), 1).numpy(), rtol=1e-12)
    assert ood.energy_score([[0.0, 0.0]])[0] == pytest.approx(math.log(2))


def test_perfectly_separated_scores_give_auroc_1_and_fpr95_0():
    m = ood.detection_metrics(np.linspace(5, 6, 50), np.linspace(0, 1, 80))
    assert m == {"auroc": 1.0, "fpr95": 0.0}
    m = ood.detection_metrics(np.linspace(0, 1, 50), np.linspace(5, 6, 80))
    assert m == {"auroc": 0.0, "fpr95": 1.0}


def test_detection_metrics_agree_with_sklearn_and_the_authors_fpr95():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s_in = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounded: ties between ID and OOD
    s_out = np.round(rng.normal(0.0, 1.0, 200), 1)
    m = ood.detection_metrics(s_in, s_out)
    y = np.r_[np.ones(300), np.zeros(200)]
    assert m["auroc"] == pytest.approx(roc_auc_score(y, np.r_[s_in, s_out]), abs=1e-12)
    # planted: ID scores 1..100; the highest threshold keeping 95% of them is 6
    m = ood.detection_metrics(np.arange(1, 101, dtype=float), np.array([3.0, 7.0, 50.0, 200.0]))
    assert m["fpr95"] == 0.75
    # the authors' metrics.py: threshold = sorted ID scores at round(0.05 N), FPR = share of OOD above
    s_in, s_out = rng.normal(1, 1, 400), rng.normal(0, 1, 300)
    thr = np.sort(s_in)[round(0.05 * len(s_in))]
    assert ood.detection_metrics(s_in, s_out)["fpr95"] == pytest.approx(np.mean(s_out > thr), abs=1.5 / 300)


def test_linear_probe_raw_weights_reproduce_its_logits():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 4)) * [1, 10, 0.1, 3] + [0, 5, -2, 1]
    y = np.arange(90) % 3
    x[y == 1, 0] += 3
    p = ood.linear_probe(x[:60], y[:60], x[60:], y[60:], extra_features={"other": x[:5]})
    np.testing.assert_allclose(x[60:] @ p["weight"].T + p["bias"], p["test_logits"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(x[:5] @ p["weight"].T + p["bias"], p["logits"]["other"], rtol=1e-9, atol=1e-9)
    assert 0 <= p["accuracy"] <= 1 and p["converged"]


def test_pearson_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=12), rng.normal(size=12)
    assert ood.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert math.isnan(ood.pearson([1, 1, 1], [1, 2, 3]))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, name", [
    (lambda: ood_model.entropy_regularizer(torch.randn(1, 4)), "embeddings"),
    (lambda: ood_model.entropy_regularizer(torch.randn(4)), "embeddings"),
    (lambda: ood_model.ETFProjector(1), "dim"),
    (lambda: ood_model.ETFProjector(4, hidden=0), "hidden"),
    (lambda: ood_model.etf_projector_weight(4, 4, c=1), "c"),
    (lambda: ood_model.build_ood_model("vgg11", 5, hidden_mult=0), "hidden_mult"),
    (lambda: ood.pool_features(torch.randn(2, 3, 4)), "output"),
    (lambda: ood.LayerFeatures({}), "modules"),
    (lambda: ood.energy_score(torch.randn(5)), "logits"),
    (lambda: ood.energy_score(torch.randn(5, 2), temperature=0), "temperature"),
    (lambda: ood.detection_metrics([1.0, float("nan")], [0.0]), "id_scores"),
    (lambda: ood.detection_metrics([1.0], []), "ood_scores"),
    (lambda: ood.detection_metrics([1.0], [0.0], tpr=1.5), "tpr"),
    (lambda: ood.linear_probe(np.ones((4, 3)), np.array([0, 1, 0, 1]), np.ones((2, 2))), "test_features"),
    (lambda: ood.linear_probe(np.ones((4, 3)), np.array([0, 0, 0, 0]), np.ones((2, 3))), "train_labels"),
    (lambda: ood.linear_probe(np.ones((4, 3)), np.array([0, 1, 0, 1]), np.ones((2, 3)), C=0), "C"),
    (lambda: ood.pearson([1, 2], [1, 2, 3]), "x and y"),
    (lambda: ood.extract_layer_features(torch.nn.Linear(2, 2), {"a": torch.nn.Identity()},
                                        torch.randn(3, 2), batch_size=0), "batch_size"),
    (lambda: ood_train.run_nc_ood("smoke", only=["nope"]), "only"),
])
def test_bad_arguments_are_refused_naming_the_argument(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


@pytest.mark.parametrize("key, value", [("alpha", -0.1), ("projector", 1), ("warmup_epochs", 2),
                                        ("id_classes", (3, 3)), ("far_dataset", "fashionmnist"),
                                        ("label_smoothing", 1.0), ("lr", 0)])
def test_bad_run_configs_are_refused_naming_the_key(key, value):
    exp = config.get_preset("nc_ood", "smoke")
    exp.pop("arms"), exp.pop("seeds")
    cfg = {**exp, "alpha": 0.0, "projector": False, "seed": 0, key: value}
    with pytest.raises(ValueError, match=key):
        ood_train._check_config(cfg)


def test_presets_have_four_arms_and_enough_seeds():
    for preset in ("smoke", "cpu", "paper"):
        exp = config.get_preset("nc_ood", preset)
        assert [a["name"] for a in exp["arms"]] == ["plain", "entropy", "etf", "both"]
        if preset != "smoke":
            assert len(exp["seeds"]) >= 3


def test_the_authors_detection_probe_learns_separable_data_and_normalizes_when_asked():
    rng = np.random.default_rng(0)
    means = np.eye(3, 6) * 5.0
    y = np.repeat(np.arange(3), 40)
    x = means[y] + rng.normal(0, 0.3, (len(y), 6))
    p = ood.adamw_probe(x, y, x, y, extra_features={"far": x[:5] * 0.1}, seed=1, **ood.DETECTION_PROBE)
    assert p["accuracy"] == 1.0 and p["logits"]["far"].shape == (5, 3)
    again = ood.adamw_probe(x, y, x, y, seed=1, **ood.DETECTION_PROBE)
    assert np.array_equal(p["test_logits"], again["test_logits"])  # seeded: reproducible
    a = ood.adamw_probe(x, y, x, y, normalize=True, seed=2)
    b = ood.adamw_probe(x * 7.0, y, x * 3.0, y, normalize=True, seed=2)  # scale is removed by the norm
    assert np.allclose(a["test_logits"], b["test_logits"], atol=1e-5)
    with pytest.raises(ValueError, match="epochs"):
        ood.adamw_probe(x, y, x, y, epochs=0)
