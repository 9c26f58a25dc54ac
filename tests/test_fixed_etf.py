"""Chapter 3 pieces: the fixed simplex-ETF classifier, d = K ResNet18, and the fixed_etf presets."""
import pytest
import torch

from ncutils import config, train
from ncutils.etf import ETFClassifier, etf_gram, simplex_etf
from ncutils.memory import build_variant, measure_training_step
from ncutils.store import Run

K = 10


@pytest.mark.parametrize("d,width", [(10, 2), (None, 2), (None, 64)])
def test_fixed_classifier_rows_form_a_simplex_etf(d, width):
    model = build_variant("resnet18", "etf", feature_dim=d, width=width)
    w = model.classifier.weight
    assert isinstance(model.classifier, ETFClassifier)
    assert w.shape == (K, d or 8 * width) and not w.requires_grad
    assert "classifier.weight" not in dict(model.named_parameters())
    torch.testing.assert_close(w.double() @ w.double().T, etf_gram(K), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.sum(0), torch.zeros(w.shape[1]), atol=1e-6, rtol=0)  # rows sum to 0


@pytest.mark.parametrize("classifier", ["learned", "etf"])
def test_d_equals_k_model_outputs_k_dimensional_features(classifier):
    model = build_variant("resnet18", classifier, feature_dim=K, width=2, in_channels=3, input_size=32).eval()
    x = torch.randn(3, 3, 32, 32)
    logits, h = model.logits_and_features(x)
    assert h.shape == (3, K) and logits.shape == (3, K)
    assert model.classifier.weight.shape == (K, K)
    last = model.backbone[-2]  # the last residual block; only it changes with d
    assert last.body[-1].num_features == K and last.shortcut[0].out_channels == K
    assert last.shortcut[0].kernel_size == (1, 1)
    default = build_variant("resnet18", classifier, width=2, in_channels=3, input_size=32)
    assert [type(m) for m in model.backbone[:-2]] == [type(m) for m in default.backbone[:-2]]
    assert sum(p.numel() for p in model.backbone[:-2].parameters()) == \
        sum(p.numel() for p in default.backbone[:-2].parameters())


def test_fixed_classifier_stays_bitwise_fixed_through_sgd_steps():
    model = build_variant("resnet18", "etf", feature_dim=K, width=2)
    before = model.classifier.weight.clone()
    conv_before = model.backbone[0].weight.detach().clone()
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % K
    opt = lambda ps: torch.optim.SGD(ps, lr=0.5, momentum=0.9, weight_decay=5e-4)  # noqa: E731
    measure_training_step(model, (x, y), opt, warmup_steps=3)
    assert torch.equal(model.classifier.weight, before)
    assert torch.equal(before, simplex_etf(K, K).T.contiguous())
    assert not torch.equal(model.backbone[0].weight, conv_before)  # the rest did train


def test_fixed_classifier_stays_bitwise_fixed_through_train(real_data, results_dir):
    cfg = train.run_config(
        {k: v for k, v in config.get_preset("fixed_etf", "smoke").items() if k not in ("variants", "memory")},
        "mnist", "resnet18", seed=0, classifier="etf", feature_dim=K, n_per_class=3, test_per_class=2,
        epochs=2, n_snapshots=1)
    assert (cfg["stem"], cfg["fixdim_block"]) == ("imagenet", "authors") and "seeds" not in cfg
    run = Run("fixed_etf", "smoke", cfg, label="etf-test")
    summary = train.train(run, cfg, device="cpu", progress=False)
    state = train.load_checkpoint(run.path / "checkpoint.pt")["model"]
    assert torch.equal(state["classifier.weight"], simplex_etf(K, K).T.contiguous())
    assert summary["trainable_parameters"] == summary["parameters"]  # the ETF weight is a buffer
    fresh = build_variant("resnet18", "etf", feature_dim=K, width=cfg["width"], stem="imagenet")
    assert any(not torch.equal(state[name], p) for name, p in fresh.named_parameters())
    # the network trained is the authors' one: 7x7 stem; last block conv1 8w -> 8w, conv2 8w -> K
    w8 = 8 * cfg["width"]
    assert state["backbone.0.weight"].shape == (cfg["width"], 1, 7, 7)
    last = max(int(k.split(".")[1]) for k in state if k.startswith("backbone.") and ".body." in k)
    assert state[f"backbone.{last}.body.0.weight"].shape == (w8, w8, 3, 3)
    assert state[f"backbone.{last}.body.3.weight"].shape == (K, w8, 3, 3)
    assert state[f"backbone.{last}.shortcut.0.weight"].shape == (K, w8, 1, 1)


def test_presets_cross_classifier_with_feature_dim():
    for preset in config.PRESET_NAMES:
        exp = config.get_preset("fixed_etf", preset)
        pairs = {(v["classifier"], v["feature_dim"]) for v in exp["variants"]}
        assert pairs == {("learned", None), ("etf", None), ("learned", K), ("etf", K)}
        assert exp["variants"][0] == {"classifier": "learned", "feature_dim": None}  # the baseline
        assert exp["archs"] == ("resnet18",)
        assert all(isinstance(m, int) for m in exp["lr_milestones"])
        assert min(exp["memory"]["batch_sizes"]) >= 1 and exp["memory"]["num_classes"] == K


def test_paper_preset_is_the_published_protocol():
    p = config.get_preset("fixed_etf", "paper")
    assert p["epochs"] == 200 and p["per_arch"]["resnet18"]["lr"] == 0.05
    assert tuple(p["lr_milestones"]) == (40, 80, 120, 160) and p["lr_gamma"] == 0.1
    assert p["momentum"] == 0.9 and p["weight_decay"] == 5e-4 and p["batch_size"] == 128
    assert p["n_per_class"] is None and p["test_per_class"] is None
    assert set(p["datasets"]) == {"mnist", "fashionmnist"} and p["per_arch"]["resnet18"]["width"] == 64
    cfg = train.run_config({k: v for k, v in p.items() if k not in ("variants", "memory")}, "mnist",
                           "resnet18", 0, **p["variants"][3])
    assert (cfg["lr"], cfg["width"], cfg["classifier"], cfg["feature_dim"]) == (0.05, 64, "etf", K)
    assert p["memory"]["width"] == 64 and 128 in p["memory"]["batch_sizes"]


@pytest.mark.parametrize("d", [K, 512])
def test_etf_weight_is_the_authors_matrix(d):
    """tding1/Neural-Collapse: W = sqrt(K/(K-1)) (I - 11^T/K), rows scaled to mean squared norm 1,
    times eye(K, 512) when d = 512 (the ETF in the first K feature coordinates)."""
    w = torch.sqrt(torch.tensor(K / (K - 1))) * (torch.eye(K) - torch.ones(K, K) / K)
    w = w / torch.sqrt(torch.norm(w, "fro") ** 2 / K)
    if d != K:
        w = w @ torch.eye(K, d)
    torch.testing.assert_close(ETFClassifier(d, K).weight, w, atol=1e-6, rtol=0)


def test_cpu_preset_seeds_full_test_sets_and_the_authors_network():
    exp = config.get_preset("fixed_etf", "cpu")
    assert tuple(exp["seeds"]) == (0, 1, 2) and exp["test_per_class"] is None
    assert exp["stem"] == "imagenet" and exp["fixdim_block"] == "authors"
    assert all(v.get("etf_bias") for v in exp["variants"] if v["classifier"] == "etf")  # as fc_bias=True
    base = {k: v for k, v in exp.items() if k not in ("variants", "memory")}
    cfgs = [train.run_config(base, "mnist", "resnet18", s, **exp["variants"][3]) for s in exp["seeds"]]
    assert all("seeds" not in c for c in cfgs) and [c["seed"] for c in cfgs] == [0, 1, 2]
    assert len({config.config_hash(c) for c in cfgs}) == 3
    mem = config.get_preset("fixed_etf", "cpu")["memory"]
    assert set(mem["stems"]) == {"cifar", "imagenet"} and (3, 32) in [tuple(i) for i in mem["inputs"]]
    assert [v["fixdim_block"] for v in mem["extra_variants"]] == ["both"]
