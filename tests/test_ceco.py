"""Tests for the authors' center-collapse head (ncutils.ceco, issue 13): the logit-adjusted CR loss,
the head against a line-by-line port of their UPerHead_ceco / UPerHead_cecol branch, the CamVid
tables recomputed from the data, frozen weights through training, identical shared initialisation
and batches across the arms, and the camvid_ceco presets."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ncutils import ceco, config, seg, store
from ncutils.etf import simplex_etf
from ncutils.train import load_checkpoint

K = 11


def random_batch(b=2, c=6, h=5, w=7, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (b, h, w), generator=g)
    labels[torch.rand(b, h, w, generator=g) < 0.25] = 255
    labels[labels == k - 1] = 0  # class k-1 absent from the batch
    return feats, labels


# ----------------------------------------------------------------------------- center_collapse_loss

def test_log_prior_loss_equals_the_explicit_formula():
    k, s = 4, 3.0
    feats, labels = random_batch(k=k)
    etf = simplex_etf(k, 6, seed=1).T.to(torch.float64)
    p = torch.tensor([-0.1, -2.0, -0.7, -1.3], dtype=torch.float64)
    got = seg.center_collapse_loss(feats, labels, etf, ignore_index=255, scale=s, normalize=True, log_prior=p)
    terms = []
    for cls in range(k):  # mean over the classes present of -log softmax(s W z/|z| + p)_k
        mask = labels == cls
        if not mask.any():
            continue
        z = feats.permute(0, 2, 3, 1)[mask].mean(0)
        logits = s * etf @ (z / z.norm()) + p
        terms.append(-(logits[cls] - torch.logsumexp(logits, 0)))
    assert len(terms) == k - 1
    assert float(got) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-12)
    no_prior = seg.center_collapse_loss(feats, labels, etf, scale=s, normalize=True)
    assert float(no_prior) != pytest.approx(float(got))  # the prior matters here
    # a constant prior is a no-op (softmax is shift invariant)
    flat = seg.center_collapse_loss(feats, labels, etf, scale=s, normalize=True,
                                    log_prior=torch.full((k,), -5.0, dtype=torch.float64))
    assert float(flat) == pytest.approx(float(no_prior), rel=1e-12)


def test_without_log_prior_the_loss_is_bitwise_the_old_expression():
    feats, labels = random_batch(k=4, seed=3)
    feats = feats.float()
    etf = simplex_etf(4, 6, seed=2).T
    centers, ids = seg.class_centers(feats, labels, 4)
    for normalize in (False, True):
        c = F.normalize(centers, dim=1) if normalize else centers
        old = F.cross_entropy(5.0 * c @ etf.T, ids)
        assert torch.equal(seg.center_collapse_loss(feats, labels, etf, scale=5.0, normalize=normalize), old)


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(4, dtype=torch.int64),
                                 torch.tensor([0.0, math.nan, 0.0, 0.0]), [0.0] * 4])
def test_a_bad_log_prior_is_refused_naming_it(bad):
    feats, labels = random_batch(k=4)
    with pytest.raises(ValueError, match="log_prior"):
        seg.center_collapse_loss(feats, labels, simplex_etf(4, 6).T.double(), log_prior=bad)


# ----------------------------------------------------------------------------- the head vs the authors' code

def authors_branch(head, output, seg_label, num_classes, weight, etf, scale, smooth, img_cls_weight=1.0):
    """UPerHead_cecol.forward (training branch) + its losses()' loss_img_cls, ported line by line from
    GPaCo/Seg/mmseg/models/decode_heads/uper_head_ceco.py (dropout off, .cuda() dropped);
    ``head`` provides their reduce / gain / img_cls[1] modules, ``weight`` their 1 x K prior."""
    seg_label = seg_label.unsqueeze(1)
    h, w = seg_label.shape[2:]
    pixel_features = head.reduce(output)
    pixel_features = F.interpolate(pixel_features, size=(h, w), mode='bilinear', align_corners=True)
    pixel_features = pixel_features.permute(0, 2, 3, 1).contiguous()
    y = seg_label.squeeze(1)
    y_valid = y[y != 255].long()
    out_valid = pixel_features[y != 255, :]
    y_onehot = F.one_hot(y_valid, num_classes).float()
    features = y_onehot.T @ out_valid
    scene_label = torch.unique(y_valid)
    features = features[scene_label, :]
    cls_num = y_onehot.T.sum(dim=1)
    cls_num = cls_num[scene_label]
    features = features / cls_num.unsqueeze(1)
    img_x = head.gain(features)
    f = F.normalize(img_x, dim=-1) if etf else img_x
    logits_img = head.classifier(f) * scale
    labels_img = scene_label
    labels_img_t = torch.where(labels_img >= num_classes, num_classes, labels_img)
    img_onehot = F.one_hot(labels_img_t, num_classes=num_classes + 1)[:, :-1]
    img_onehot = smooth * img_onehot + (1 - smooth) / (num_classes - 1) * (1 - img_onehot)
    return -(img_onehot * F.log_softmax(logits_img + torch.log(weight + 1e-12), dim=1)).sum() \
        / (img_onehot.sum() + 1e-12) * img_cls_weight


@pytest.mark.parametrize("kind, scale, smooth, size", [("ceco", 5.0, 1.0, (24, 30)), ("ceco", 5.0, 1.0, (12, 15)),
                                                       ("cecol", 1.0, 0.5, (24, 30))])
@pytest.mark.parametrize("fast", [False, True])
def test_head_equals_the_authors_branch(kind, scale, smooth, size, fast):
    torch.manual_seed(0)
    counts = torch.tensor([366, 365, 366, 367, 349, 319, 351, 173, 360, 317, 201])
    head = ceco.CecoHead(16, K, kind=kind, scale=scale, smooth=smooth, dropout=0.0,
                         log_prior=ceco.log_prior(counts), etf_seed=4).train()
    theirs = copy.deepcopy(head)
    g = torch.Generator().manual_seed(1)
    out = torch.randn(3, 16, *size, generator=g, requires_grad=True)
    labels = torch.randint(0, K, (3, 24, 30), generator=g)
    labels[:, :4] = 255
    labels[labels == 9] = 2  # a class absent from the batch
    prior = (counts.float() / counts.float().sum()).view(1, K)
    ref = authors_branch(theirs, out, labels, K, prior, kind == "ceco", scale, smooth)
    got = head.loss(out, labels, fast=fast)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    g_ref, = torch.autograd.grad(ref, out)
    g_got, = torch.autograd.grad(got, out)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-7)
    for a, b in ((head.reduce[1].running_mean, theirs.reduce[1].running_mean),
                 (head.reduce[1].running_var, theirs.reduce[1].running_var)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # updated as their BatchNorm does


def test_ceco_etf_is_theirs_and_cecol_is_a_random_linear_layer():
    w = ceco.ceco_etf_weight(K, 512, torch.Generator().manual_seed(0)).double()
    assert w.shape == (K, 512)
    torch.testing.assert_close(w.norm(dim=1), torch.ones(K, dtype=torch.float64))
    gram = w @ w.T
    torch.testing.assert_close(gram, (K * torch.eye(K, dtype=torch.float64) - 1) / (K - 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.sum(0), torch.zeros(512, dtype=torch.float64), atol=1e-6, rtol=0)
    same = ceco.ceco_etf_weight(K, 512, torch.Generator().manual_seed(0))
    assert torch.equal(same, ceco.ceco_etf_weight(K, 512, torch.Generator().manual_seed(0)))
    h1 = ceco.CecoHead(32, K, kind="ceco")
    assert torch.equal(h1.classifier.bias, torch.zeros(K)) and h1.normalize
    assert h1.reduce[0].bias is None and isinstance(h1.reduce[1], torch.nn.BatchNorm2d)
    assert h1.reduce[0].out_channels == 128 and h1.gain[0].out_features == 512
    h2 = ceco.CecoHead(32, K, kind="cecol")
    assert not h2.normalize and h2.classifier.bias.abs().sum() > 0
    g2 = h2.classifier.weight.double() @ h2.classifier.weight.double().T
    assert (g2 - torch.diag(torch.diagonal(g2))).abs().max() > 1e-3  # not an ETF
    assert not any(p.requires_grad for p in h1.parameters()) and not any(p.requires_grad for p in h2.parameters())
    with pytest.raises(ValueError, match="kind"):
        ceco.CecoHead(32, K, kind="etf")
    with pytest.raises(ValueError, match="log_prior"):
        ceco.CecoHead(32, K, log_prior=torch.zeros(3))
    with pytest.raises(ValueError, match="smooth"):
        ceco.CecoHead(32, K, smooth=1.5)


def test_dropout_masks_come_from_the_generator_and_only_in_train_mode():
    torch.manual_seed(0)
    head = ceco.CecoHead(8, 4, dropout=0.5, reduce_dim=6, gain_dim=8)
    feats, labels = random_batch(c=8, k=4)
    feats = feats.float()
    a = head.loss(feats, labels, generator=torch.Generator().manual_seed(3))
    b = head.loss(feats, labels, generator=torch.Generator().manual_seed(3))
    c = head.loss(feats, labels, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    head.eval()
    e1 = head.loss(feats, labels, generator=torch.Generator().manual_seed(3))
    e2 = head.loss(feats, labels, generator=torch.Generator().manual_seed(4))
    assert torch.equal(e1, e2)


# ----------------------------------------------------------------------------- tables and class weights

def test_committed_tables_equal_the_recomputed_camvid_training_split(camvid_root):
    stats = ceco.camvid_label_stats("train")
    assert torch.equal(stats["image"], ceco.committed_camvid_stats("image"))
    assert torch.equal(stats["pixel"], ceco.committed_camvid_stats("pixel"))
    assert int(stats["image"].max()) <= 367 and int(stats["image"].min()) > 0


def test_label_counts_and_median_frequency_on_a_hand_example():
    labels = torch.tensor([[[0, 0], [1, 255]], [[0, 2], [2, 2]]])
    images, pixels = ceco.label_counts(labels, 3)
    assert images.tolist() == [2, 1, 1] and pixels.tolist() == [3, 1, 3]
    w = ceco.median_frequency_weights(pixels, images, 4)  # freq = 3/8, 1/4, 3/4; median 3/8
    torch.testing.assert_close(w, torch.tensor([1.0, 1.5, 0.5]))
    torch.testing.assert_close(ceco.log_prior(images), torch.log(torch.tensor([0.5, 0.25, 0.25]) + 1e-12))
    with pytest.raises(ValueError, match="pixel_counts"):
        ceco.median_frequency_weights([1, 0, 2], [1, 1, 1], 4)
    with pytest.raises(ValueError, match="counts"):
        ceco.log_prior([-1, 2])


def test_a_bad_table_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "stats.txt"
    bad.write_text("3\nx\n")
    with pytest.raises(ValueError, match="stats.txt"):
        ceco.read_stats_table(bad, 2)
    with pytest.raises(FileNotFoundError, match="missing"):
        ceco.read_stats_table(tmp_path / "none.txt", 2)
    ceco.write_stats_table(bad, [5, 7])
    assert ceco.read_stats_table(bad, 2).tolist() == [5, 7]


# ----------------------------------------------------------------------------- training

def tiny(variant: str, **kw):
    """The smoke camvid_ceco config of a variant, shrunk to seconds."""
    cfg = next(c for n, _, s, c in ceco.ceco_variant_configs("smoke") if n == variant and s == 0)
    cfg.update(seed=5, widths=(4, 8), feature_dim=12, crop=(32, 48), batch_size=2, epochs=2, n_train=4,
               n_eval=2, eval_every=1, ceco_dim=16, ceco_gain_dim=24)
    cfg.update(kw)
    return cfg


def test_every_arm_starts_from_the_same_shared_network():
    states = {v: seg.build_seg_model(tiny(v)).state_dict() for v in ("baseline", "ceco", "cecol", "wce", "cr_simple")}
    base = states["baseline"]
    for v, sd in states.items():
        assert set(base) <= set(sd), v
        assert all(torch.equal(base[k], sd[k]) for k in base), v
    assert any(k.startswith("ceco.") for k in states["ceco"]) and "cr_head.weight" in states["cr_simple"]
    assert not any(k.startswith(("ceco.", "cr_")) for k in states["wce"])


def test_the_arms_see_the_same_batches(camvid_root, results_dir, monkeypatch):
    seen = {}
    real = seg.augment_batch

    def record(*args):
        out = real(*args)
        seen.setdefault(current, []).append((out[0].clone(), out[1].clone()))
        return out

    monkeypatch.setattr(seg, "augment_batch", record)
    for current in ("baseline", "ceco", "wce"):
        cfg = tiny(current)
        seg.train_segmentation(store.Run("camvid_cr", "smoke", cfg, label=current), cfg, device="cpu", progress=False)
    assert len(seen["baseline"]) == 4
    for v in ("ceco", "wce"):
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(seen["baseline"], seen[v]))


@pytest.mark.parametrize("variant", ["ceco", "cecol"])
def test_training_never_changes_the_frozen_head_but_updates_its_batchnorm_statistics(variant, camvid_root,
                                                                                     results_dir):
    cfg = tiny(variant)
    initial = seg.build_seg_model(cfg).state_dict()
    run = store.Run("camvid_cr", "smoke", cfg, label=variant)
    summary = seg.train_segmentation(run, cfg, device="cpu", progress=False)
    assert summary["complete"]
    final = load_checkpoint(run.path / "checkpoint.pt")["model"]
    frozen = ["ceco.reduce.0.weight", "ceco.reduce.1.weight", "ceco.reduce.1.bias", "ceco.gain.0.weight",
              "ceco.gain.0.bias", "ceco.classifier.weight", "ceco.classifier.bias", "ceco.log_prior"]
    for key in frozen:
        assert torch.equal(final[key], initial[key]), key
    # as theirs: the frozen BatchNorm still tracks batch statistics in train mode (never read)
    assert int(final["ceco.reduce.1.num_batches_tracked"]) == 4
    assert not torch.equal(final["ceco.reduce.1.running_mean"], initial["ceco.reduce.1.running_mean"])
    assert not torch.equal(final["classifier.weight"], initial["classifier.weight"])  # the network trained
    trainable = sum(p.numel() for p in seg.build_seg_model(tiny("baseline")).parameters())
    assert summary["trainable_parameters"] == trainable < summary["parameters"]
    hist = run.table("history")
    assert hist["cr_loss"].notna().all() and (hist["cr_loss"] > 0).all()
    assert set(run.table("collapse")["branch"]) == {"features"}


def test_class_weighted_cross_entropy_uses_median_frequency_weights():
    w = ceco.class_weights(tiny("wce"), K)
    pix, img = ceco.committed_camvid_stats("pixel").double(), ceco.committed_camvid_stats("image").double()
    freq = pix / (img * 240 * 180)
    torch.testing.assert_close(w, (freq.median() / freq).float())
    assert int(w.argmax()) == 10 and int(w.argmin()) == 3  # Bicyclist up, Road down
    assert ceco.class_weights(tiny("baseline"), K) is None


@pytest.mark.parametrize("change, match", [({"cr_head": "etf"}, "cr_head"), ({"class_weighting": "inverse"}, "class_weighting"),
                                           ({"cr_frozen": False}, "cr_frozen"), ({"ceco_prior": "pixels"}, "ceco_prior")])
def test_bad_ceco_configs_are_refused_naming_the_key(change, match, results_dir):
    cfg = tiny("ceco", **change)
    with pytest.raises(ValueError, match=match):
        seg.train_segmentation(store.Run("camvid_cr", "smoke", cfg, label="bad"), cfg, progress=False)


# ----------------------------------------------------------------------------- presets

def test_presets_have_the_seeds_and_reuse_the_identical_committed_runs():
    for preset in ("cpu", "paper"):
        variants = {v["name"]: v for v in config.get_preset("camvid_ceco", preset)["variants"]}
        assert set(variants) == {"baseline", "ceco", "cecol", "wce", "cr_simple"}
        assert len(variants["baseline"]["seeds"]) >= 5 and len(variants["ceco"]["seeds"]) >= 5
        assert all(len(variants[v]["seeds"]) >= 3 for v in ("cecol", "wce", "cr_simple"))
    cfgs = {(n, s): (label, c) for n, label, s, c in ceco.ceco_variant_configs("cpu")}
    old = config.get_preset("camvid_cr", "cpu")
    for name, old_name in (("baseline", "baseline"), ("cr_simple", "cr")):
        old_variant = next(v for v in old["variants"] if v["name"] == old_name)
        for seed in old["seeds"]:
            label, cfg = cfgs[name, seed]
            want = {k: v for k, v in old.items() if k not in ("variants", "seeds", "lambda_sweep")}
            want |= {"cr_weight": old_variant["cr_weight"], "seed": seed}
            assert config.config_hash(cfg) == config.config_hash(want)
            assert store.Run("camvid_cr", "cpu", cfg, f"{label}-s{seed}").path.name.startswith(f"cpu-{old_name}_s{seed}-")
    ceco_cfg = cfgs["ceco", 0][1]
    assert ceco_cfg["cr_head"] == "ceco" and ceco_cfg["cr_scale"] == 5.0 and ceco_cfg["cr_normalize"]
    assert ceco_cfg["ceco_dim"] == 128 and ceco_cfg["ceco_gain_dim"] == 512 and ceco_cfg["ceco_prior"] == "image_label"
    cecol = cfgs["cecol", 0][1]
    assert (cecol["cr_scale"], cecol["cr_normalize"], cecol["ceco_smooth"], cecol["cr_weight"]) == (1.0, False, 0.5, 1.0)


# ----------------------------------------------------------------------------- reading the study

def test_paired_interval_closed_form():
    d = [0.01, 0.03, -0.01, 0.02]
    out = ceco.paired_interval(d)
    mean, sd = 0.0125, math.sqrt(sum((x - 0.0125) ** 2 for x in d) / 3)
    half = 3.182446305284263 * sd / 2  # t_{0.975, 3}
    assert out["n"] == 4 and out["mean"] == pytest.approx(mean)
    assert out["low"] == pytest.approx(mean - half) and out["high"] == pytest.approx(mean + half)
    one = ceco.paired_interval([0.2])
    assert one["mean"] == 0.2 and math.isnan(one["low"]) and math.isnan(one["high"])
    with pytest.raises(ValueError, match="diff"):
        ceco.paired_interval([])
    with pytest.raises(ValueError, match="level"):
        ceco.paired_interval(d, level=1.5)


def test_frequency_groups_and_etf_deviation():
    g = ceco.frequency_groups([5, 100, 7, 50, 1, 30, 9, 2])
    assert g == {"head": [1, 3, 5], "common": [6], "tail": [2, 0, 7, 4]}
    with pytest.raises(ValueError, match="head and tail"):
        ceco.frequency_groups([1, 2, 3], head=2, tail=1)
    w = simplex_etf(5, 7, seed=0).T.double()
    torch.testing.assert_close(ceco.etf_cosine_deviation(w @ w.T), torch.zeros(5, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    c = torch.eye(3, dtype=torch.float64)  # orthogonal means: every off-diagonal cosine 0, ETF -1/2
    torch.testing.assert_close(ceco.etf_cosine_deviation(c), torch.full((3,), 0.5, dtype=torch.float64))
