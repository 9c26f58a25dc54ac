"""Tests for ncutils.seg: class centers, the center-collapse loss, IoU, the U-Net, pixel collapse."""

import math

import pytest
import torch
import torch.nn.functional as F

from ncutils import seg
from ncutils.etf import ETFClassifier, simplex_etf
from ncutils.models import count_parameters

IGN = 255


def random_batch(b=2, c=3, h=4, w=5, k=4, seed=0, ignore_frac=0.25):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (b, h, w), generator=g)
    labels[torch.rand(b, h, w, generator=g) < ignore_frac] = IGN
    return feats, labels


# ----------------------------------------------------------------------------- class centers

def test_centers_equal_a_hand_masked_mean():
    feats, labels = random_batch(k=5)
    labels[labels == 3] = IGN  # class 3 absent, class 4 present
    centers, ids = seg.class_centers(feats, labels, num_classes=5)
    sums, counts = {}, {}
    b, c, h, w = feats.shape
    for i in range(b):
        for y in range(h):
            for x in range(w):
                k = int(labels[i, y, x])
                if k == IGN:
                    continue
                sums[k] = sums.get(k, torch.zeros(c, dtype=torch.float64)) + feats[i, :, y, x]
                counts[k] = counts.get(k, 0) + 1
    assert ids.tolist() == sorted(sums) and 3 not in ids.tolist()
    for row, k in zip(centers, ids.tolist()):
        torch.testing.assert_close(row, sums[k] / counts[k])


def test_features_are_resized_bilinearly_to_the_labels():
    feats = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (1, 6, 8))
    up = F.interpolate(feats, size=(6, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seg.class_centers(feats, labels, 3)[0], seg.class_centers(up, labels, 3)[0])
    # a 1 x 1 feature map is constant after upsampling: every center equals it
    one = torch.tensor([1.5, -2.0], dtype=torch.float64).view(1, 2, 1, 1)
    centers, ids = seg.class_centers(one, labels, 3)
    torch.testing.assert_close(centers, one.view(1, 2).expand(len(ids), 2))


def test_ignored_pixels_never_contribute():
    feats, labels = random_batch(k=4, c=3)
    etf = simplex_etf(4, 3).T
    ignored = (labels == IGN).unsqueeze(1).expand_as(feats)
    assert ignored.any()
    poisoned = feats.clone()
    poisoned[ignored] = float("nan")  # even NaN at ignored pixels is never read
    c1, i1 = seg.class_centers(feats, labels, 4)
    c2, i2 = seg.class_centers(poisoned, labels, 4)
    assert torch.equal(i1, i2) and torch.equal(c1, c2)
    poisoned[ignored] = 1e6
    assert seg.center_collapse_loss(feats, labels, etf) == seg.center_collapse_loss(poisoned, labels, etf)
    x = feats.clone().requires_grad_(True)
    seg.center_collapse_loss(x, labels, etf, scale=3.0).backward()
    assert torch.all(x.grad[ignored] == 0) and x.grad[~ignored].abs().sum() > 0


def test_no_labelled_pixel_gives_no_center_and_zero_loss():
    feats = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.full((1, 2, 2), IGN)
    centers, ids = seg.class_centers(feats, labels, 3)
    assert centers.shape == (0, 3) and ids.numel() == 0
    loss = seg.center_collapse_loss(feats, labels, simplex_etf(3, 3).T)
    assert float(loss.detach()) == 0.0
    loss.backward()


# ----------------------------------------------------------------------------- the CR loss

def hand_example():
    """Pixels (1, 0), (3, 2) of class 0, (0, 1) of class 1 and (100, -7) ignored:
    centers z_0 = (2, 1), z_1 = (0, 1)."""
    feats = torch.tensor([[1.0, 3.0, 0.0, 100.0], [0.0, 2.0, 1.0, -7.0]], dtype=torch.float64)
    return feats.view(1, 2, 1, 4), torch.tensor([[[0, 0, 1, IGN]]])


def test_cr_loss_equals_a_hand_computed_value():
    feats, labels = hand_example()
    w = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)  # K x C
    # z_0 W^T = (2, -2): -log softmax_0 = log(1 + e^-4); z_1 W^T = (0, 0): -log softmax_1 = log 2
    expected = (math.log(1 + math.exp(-4)) + math.log(2)) / 2
    assert float(seg.center_collapse_loss(feats, labels, w)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.35564855, abs=1e-8)
    # scale 2: logits (4, -4) and (0, 0)
    expected = (math.log(1 + math.exp(-8)) + math.log(2)) / 2
    assert float(seg.center_collapse_loss(feats, labels, w, scale=2.0)) == pytest.approx(expected, rel=1e-12)
    # normalize: z_0 / |z_0| = (2, 1)/sqrt(5) -> logits (2, -2)/sqrt(5); z_1 is already a unit vector
    expected = (math.log(1 + math.exp(-4 / math.sqrt(5))) + math.log(2)) / 2
    assert float(seg.center_collapse_loss(feats, labels, w, normalize=True)) == pytest.approx(expected, rel=1e-12)
    # the 2-class simplex ETF in 2-D: rows (1, -1)/sqrt(2) and (-1, 1)/sqrt(2)
    etf = ETFClassifier(2, 2)  # a module is accepted; its float32 weight is cast to the features' dtype
    torch.testing.assert_close(etf.weight, torch.tensor([[1.0, -1.0], [-1.0, 1.0]]) / math.sqrt(2))
    # z_0 W^T = (1, -1)/sqrt(2) and z_1 W^T = (-1, 1)/sqrt(2): both classes win by a margin sqrt(2)
    expected = math.log(1 + math.exp(-math.sqrt(2)))
    assert float(seg.center_collapse_loss(feats, labels, etf)) == pytest.approx(expected, rel=1e-6)


def test_scale_and_normalize_behave():
    feats, labels = random_batch(c=6, k=4, seed=3)
    etf = simplex_etf(4, 6, seed=1).T.double()
    base = seg.center_collapse_loss(feats, labels, etf)
    # scale s on features f equals scale 1 on s * f (no normalization) ...
    torch.testing.assert_close(seg.center_collapse_loss(feats, labels, etf, scale=2.5),
                               seg.center_collapse_loss(2.5 * feats, labels, etf))
    # ... while normalized centers ignore any positive rescaling of the features
    n1 = seg.center_collapse_loss(feats, labels, etf, normalize=True, scale=4.0)
    torch.testing.assert_close(n1, seg.center_collapse_loss(7.0 * feats, labels, etf, normalize=True, scale=4.0))
    assert not torch.isclose(base, n1)
    # centers sitting on their ETF vertices: the loss falls to 0 as the scale grows
    k = 4
    labels = torch.arange(k).view(1, 1, k)
    on_vertex = etf.T.reshape(1, 6, 1, k)  # pixel k has feature w*_k
    losses = [float(seg.center_collapse_loss(on_vertex, labels, etf, scale=s)) for s in (1, 10, 100)]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 1e-30


def test_gradient_reaches_features_and_the_etf_never_changes():
    torch.manual_seed(0)
    model = seg.SegUNet(num_classes=3, widths=(4, 8), feature_dim=6, cr_dim=3)
    assert isinstance(model.cr_etf, ETFClassifier)
    assert all(p is not model.cr_etf.weight for p in model.parameters())
    etf_before = model.cr_etf.weight.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(2, 3, 9, 11), torch.randint(0, 3, (2, 9, 11))
    y[0, 0] = IGN
    for _ in range(2):
        opt.zero_grad()
        logits, feats = model.logits_and_features(x)
        feats.retain_grad()
        loss = F.cross_entropy(logits, y, ignore_index=IGN) + model.cr_loss(feats, y, normalize=True, scale=5.0)
        loss.backward()
        assert feats.grad is not None and feats.grad.abs().sum() > 0
        assert model.cr_head.weight.grad.abs().sum() > 0
        opt.step()
    assert torch.equal(model.cr_etf.weight, etf_before)
    assert "cr_etf.weight" in model.state_dict()
    # the CR loss alone moves the features through the shared network
    feats = torch.randn(2, 6, 9, 11, requires_grad=True)
    model.cr_loss(feats, y).backward()
    assert feats.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- IoU

def test_iou_on_a_hand_example():
    target = torch.tensor([[[0, 0, 1], [1, 2, IGN]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
    # class 0: TP 1, FP 1 (pixel of class 2 predicted 0), FN 1 -> 1/3
    # class 1: TP 2, FP 1, FN 0 -> 2/3;  class 2: TP 0, FN 1 (the 2 predicted at a void pixel
    # does not count) -> 0;  class 3: in neither -> NaN
    iou = seg.iou_per_class(pred, target, num_classes=4)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0]) and math.isnan(iou[3])
    cm = seg.ConfusionMatrix(4)
    cm.update(pred[:, :1], target[:, :1]).update(pred[:, 1:], target[:, 1:])  # streaming
    assert torch.equal(cm.matrix, seg.ConfusionMatrix(4).update(pred, target).matrix)
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    acc = cm.class_accuracy()
    assert acc[:3].tolist() == pytest.approx([0.5, 1.0, 0.0]) and math.isnan(acc[3])
    assert math.isnan(seg.ConfusionMatrix(3).miou())


# ----------------------------------------------------------------------------- refusals

def test_bad_input_is_refused_naming_the_argument():
    feats, labels = random_batch(b=2, c=3, k=4)
    etf = simplex_etf(4, 3).T
    with pytest.raises(ValueError, match="labels"):
        seg.class_centers(feats, labels[:1], 4)  # batch mismatch
    with pytest.raises(ValueError, match="labels"):
        seg.class_centers(feats, labels[0], 4)  # not B x H x W
    bad = labels.clone()
    bad[0, 0, 0] = 4
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.3"):
        seg.class_centers(feats, bad, 4)
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="labels"):
        seg.center_collapse_loss(feats, bad, etf)
    with pytest.raises(TypeError, match="labels"):
        seg.class_centers(feats, labels.float(), 4)
    with pytest.raises(ValueError, match="features"):
        seg.class_centers(feats[0], labels, 4)
    with pytest.raises(ValueError, match="etf must have shape K x C"):
        seg.center_collapse_loss(feats, labels, etf.T)  # C x K
    with pytest.raises(ValueError, match="etf"):
        seg.center_collapse_loss(feats, labels, torch.ones(4))
    with pytest.raises(ValueError, match="scale"):
        seg.center_collapse_loss(feats, labels, etf, scale=0.0)
    with pytest.raises(ValueError, match="num_classes"):
        seg.class_centers(feats, labels, 0)
    with pytest.raises(ValueError, match="pred must have the shape"):
        seg.iou_per_class(labels[:1], labels, 4)
    with pytest.raises(TypeError, match="argmax"):
        seg.iou_per_class(torch.randn(2, 4, 4, 5), labels, 4)
    with pytest.raises(ValueError, match="target must lie"):
        seg.iou_per_class(labels.clamp(max=3), bad, 4)
    with pytest.raises(ValueError, match="pred must lie"):
        seg.iou_per_class(torch.full_like(labels, 7), labels, 4)
    with pytest.raises(ValueError, match="cr_dim"):
        seg.SegUNet(num_classes=11, cr_dim=5)  # an ETF of 11 vectors needs >= 10 dimensions
    with pytest.raises(ValueError, match="widths"):
        seg.SegUNet(widths=())
    plain = seg.SegUNet(num_classes=3, widths=(4,))
    with pytest.raises(ValueError, match="no CR branch"):
        plain.cr_loss(torch.randn(1, 32, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="x must have shape"):
        plain(torch.randn(1, 1, 8, 8))


# ----------------------------------------------------------------------------- model

def test_unet_shapes_and_feature_consistency():
    torch.manual_seed(0)
    model = seg.SegUNet()
    assert 2e5 < count_parameters(model) < 2e6
    assert model.num_classes == 11 and model.feature_dim == 32
    assert model.classifier_weight.shape == (11, 32)
    x = torch.randn(2, 3, 45, 61)  # sizes not divisible by 8
    logits, h = model.logits_and_features(x)
    assert logits.shape == (2, 11, 45, 61) and h.shape == (2, 32, 45, 61)
    torch.testing.assert_close(logits, model.classifier(h))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.classifier(model.forward_features(x)))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


# ----------------------------------------------------------------------------- pixel-feature collapse

def test_collapse_metrics_of_perfectly_collapsed_pixels():
    k, c = 3, 3
    w = simplex_etf(k, c).T.double()  # K x C, rows sum to zero
    labels = torch.tensor([[[0, 1, 2, 0], [2, 1, IGN, 0]]])
    feats = torch.zeros(1, c, 2, 4, dtype=torch.float64)
    for y in range(2):
        for x in range(4):
            lab = int(labels[0, y, x])
            feats[0, :, y, x] = 2.0 * w[lab] if lab != IGN else 50.0
    m = seg.seg_collapse_metrics(feats, labels, w)
    assert m["nc1"] == pytest.approx(0.0, abs=1e-20)
    assert m["self_duality"] == pytest.approx(0.0, abs=1e-12)
    assert m["ncc_mismatch"] == 0.0 and m["maxangle_means"] == pytest.approx(0.0, abs=1e-12)
    # a 1x1 conv classifier's K x C x 1 x 1 weight is accepted as is
    assert seg.seg_collapse_metrics(feats, labels, w.view(k, c, 1, 1))["nc1"] == m["nc1"]
    geo = seg.class_geometry(2.0 * w, w)
    torch.testing.assert_close(geo["self_duality_cosines"], torch.ones(k, dtype=torch.float64))
    torch.testing.assert_close(geo["mean_norms"], 2.0 * torch.ones(k, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight must have shape K x C"):
        seg.seg_collapse_metrics(feats, labels, w[:, :2])


def test_subsample_pixels_caps_each_class():
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 20)[torch.randperm(73, generator=torch.Generator().manual_seed(0))]
    idx = seg.subsample_pixels(labels, 5, seed=1)
    assert torch.bincount(labels[idx]).tolist() == [5, 3, 5]
    assert torch.equal(idx, seg.subsample_pixels(labels, 5, seed=1)) and torch.equal(idx, idx.sort().values)
    assert not torch.equal(idx, seg.subsample_pixels(labels, 5, seed=2))


def test_evaluate_segmentation_streams_pixels():
    torch.manual_seed(0)
    model = seg.SegUNet(num_classes=3, widths=(4, 8), feature_dim=5, cr_dim=4)
    images = torch.randint(0, 256, (5, 3, 8, 10), dtype=torch.uint8)
    labels = torch.randint(0, 3, (5, 8, 10), dtype=torch.uint8)
    labels[:, 0] = IGN
    out = seg.evaluate_segmentation(model, images, labels, batch_size=2)
    assert model.training  # mode restored
    assert int(out["confusion"].matrix.sum()) == int((labels != IGN).sum())
    assert out["stats"].counts.tolist() == torch.bincount(labels[labels != IGN].long(), minlength=3).double().tolist()
    model.eval()
    from ncutils.data import camvid_to_float
    with torch.no_grad():
        logits, h = model.logits_and_features(camvid_to_float(images))
    torch.testing.assert_close(out["iou"], seg.iou_per_class(logits.argmax(1), labels, 3))
    ref = seg.seg_collapse_metrics(h, labels, model.classifier, model.classifier.bias)
    for key in ("nc1", "self_duality", "equinorm_means"):
        assert out["collapse"][key] == pytest.approx(ref[key], rel=1e-6)
    cr = seg.evaluate_segmentation(model, images, labels, branch="cr")
    assert cr["collapse"]["maxangle_classifiers"] == pytest.approx(0.0, abs=1e-6)  # the fixed ETF
    # the NCC pass: the streamed mismatch equals the in-memory one of all labelled pixels at once
    with_ncc = seg.evaluate_segmentation(model, images, labels, batch_size=2, ncc=True)
    assert with_ncc["collapse"]["ncc_mismatch"] == pytest.approx(ref["ncc_mismatch"], abs=1e-12)
    assert math.isnan(out["collapse"]["ncc_mismatch"])  # not computed without ncc=True
