"""Tests for ncutils.models: shapes, feature/logit consistency, parameter counts."""

import pytest
import torch
from torch import nn

from ncutils.models import ARCHS, NCModel, build_model, count_parameters

DEFAULT_D = {"mlp": 512, "cnn": 128, "resnet18": 512, "vgg11": 512}


def check(model, x, num_classes, d):
    assert isinstance(model, NCModel)
    assert model.num_classes == num_classes and model.feature_dim == d
    logits, h = model.logits_and_features(x)
    assert logits.shape == (len(x), num_classes) and h.shape == (len(x), d)
    assert torch.allclose(logits, model.classifier(h), atol=1e-6)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), model.classifier(model.forward_features(x)), atol=1e-6)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_forward_28px(arch):
    torch.manual_seed(0)
    check(build_model(arch), torch.randn(4, 1, 28, 28), 10, DEFAULT_D[arch])


@pytest.mark.parametrize("arch", ["resnet18", "vgg11"])
def test_forward_32px_rgb(arch):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_channels=3, input_size=32, width=16)
    check(model, torch.randn(4, 3, 32, 32), 7, 8 * 16)


def test_widths_depth_and_feature_dim():
    check(build_model("mlp", width=32, depth=2), torch.randn(4, 1, 28, 28), 10, 32)
    mlp = build_model("mlp", num_classes=3, in_channels=3, input_size=8, width=16, depth=1, feature_dim=5)
    check(mlp, torch.randn(4, 3, 8, 8), 3, 5)
    assert sum(isinstance(m, nn.Linear) for m in mlp.backbone.modules()) == 1
    check(build_model("cnn", width=8), torch.randn(4, 1, 28, 28), 10, 32)
    check(build_model("cnn", width=8, feature_dim=10), torch.randn(4, 1, 28, 28), 10, 10)
    check(build_model("vgg11", width=8, feature_dim=10), torch.randn(4, 1, 28, 28), 10, 10)
    check(build_model("resnet18", width=8, feature_dim=10), torch.randn(4, 1, 28, 28), 10, 10)


def test_backward_reaches_backbone():
    model = build_model("cnn", width=8)
    nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------- parameter counts

def conv(k, cin, cout):
    return k * k * cin * cout


def bn(c):
    return 2 * c


def block(cin, cout, stride=1, mid=None):
    mid = cout if mid is None else mid
    shortcut = conv(1, cin, cout) + bn(cout) if stride != 1 or cin != cout else 0
    return conv(3, cin, mid) + bn(mid) + conv(3, mid, cout) + bn(cout) + shortcut


def resnet18_count(in_channels, num_classes, d, w=64, both=False):
    """Hand count: cifar stem, stages w..8w, last block 8w -> d (conv1 8w -> 8w unless ``both``),
    Linear(d, K)."""
    blocks = [(w, w), (w, w), (w, 2 * w, 2), (2 * w, 2 * w), (2 * w, 4 * w, 2), (4 * w, 4 * w),
              (4 * w, 8 * w, 2), (8 * w, d, 1, None if both else 8 * w)]
    return conv(3, in_channels, w) + bn(w) + sum(block(*b) for b in blocks) + d * num_classes + num_classes


def test_resnet18_feature_dim_trick():
    model = build_model("resnet18", num_classes=10, in_channels=3, input_size=32, feature_dim=10)
    assert count_parameters(model) == resnet18_count(3, 10, 10)
    assert count_parameters(build_model("resnet18", 10, 3, 32)) == resnet18_count(3, 10, 512) == 11173962
    last = model.backbone[-2]  # last BasicBlock before the pool
    assert isinstance(last.shortcut[0], nn.Conv2d) and last.shortcut[0].kernel_size == (1, 1)
    assert model.backbone[-3].body[0].out_channels == 512  # the block before keeps 8 * width
    h = model.forward_features(torch.randn(2, 3, 32, 32))
    assert h.shape == (2, 10)


def _convs(block):
    return [(m.in_channels, m.out_channels, m.kernel_size) for m in block.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_resnet18_d_equals_k_is_the_authors_block_by_default(stem):
    """Zhu et al.'s ``ResNet(fixdim=K)`` (tding1/Neural-Collapse, models/resnet.py) changes only the
    last BasicBlock: conv1 3x3 512 -> 512 + BN, conv2 3x3 512 -> K + BN(K), shortcut 1x1 512 -> K + BN(K)."""
    kw = dict(num_classes=10, in_channels=3, input_size=32, width=64, stem=stem)
    authors = build_model("resnet18", feature_dim=10, **kw)
    full = build_model("resnet18", **kw)
    both = build_model("resnet18", feature_dim=10, fixdim_block="both", **kw)
    assert _convs(authors.backbone[-2]) == [(512, 512, (3, 3)), (512, 10, (3, 3)), (512, 10, (1, 1))]
    assert [m.num_features for m in authors.backbone[-2].modules() if isinstance(m, nn.BatchNorm2d)] == [512, 10, 10]
    assert _convs(both.backbone[-2]) == [(512, 10, (3, 3)), (10, 10, (3, 3)), (512, 10, (1, 1))]
    assert _convs(full.backbone[-2]) == [(512, 512, (3, 3)), (512, 512, (3, 3))]  # identity shortcut
    for other in (authors, both):  # everything before the last block is the same network
        assert [tuple(p.shape) for p in other.backbone[:-2].parameters()] == \
            [tuple(p.shape) for p in full.backbone[:-2].parameters()]
    stem_extra = 0 if stem == "cifar" else (49 - 9) * 3 * 64  # 7x7 instead of 3x3 stem conv
    assert count_parameters(authors) == 8_859_862 + stem_extra
    assert count_parameters(full) == 11_173_962 + stem_extra
    assert count_parameters(both) == 6_500_462 + stem_extra == resnet18_count(3, 10, 10, both=True) + stem_extra
    x = torch.randn(2, 3, 32, 32)
    assert authors.forward_features(x).shape == both.forward_features(x).shape == (2, 10)


def test_resnet18_issue_counts():
    """The counts of issue 12 (3x3 stem, CIFAR-10 input, K = 10, learned classifier)."""
    kw = dict(num_classes=10, in_channels=3, input_size=32, width=64)
    assert count_parameters(build_model("resnet18", feature_dim=10, **kw)) == 8_859_862
    assert count_parameters(build_model("resnet18", **kw)) == 11_173_962
    assert count_parameters(build_model("resnet18", feature_dim=10, fixdim_block="both", **kw)) == 6_500_462


def test_param_counts_match_torchvision():
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):  # no memory, no init cost
        ref = tv.models.resnet18()
        assert count_parameters(build_model("resnet18", 1000, 3, 224, stem="imagenet")) == count_parameters(ref)
        ref = tv.models.resnet18(num_classes=10)
        ref.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        assert count_parameters(build_model("resnet18", 10, 3, 32)) == count_parameters(ref)
        ours = build_model("vgg11", 10, 3, 32).backbone
        assert count_parameters(ours) == count_parameters(tv.models.vgg11_bn().features)


def test_count_parameters_trainable_only():
    model = build_model("mlp", width=16)
    total = count_parameters(model)
    model.classifier.requires_grad_(False)
    assert count_parameters(model) == total - (16 * 10 + 10)
    assert count_parameters(model, trainable_only=False) == total


# ----------------------------------------------------------------------------- classifier and errors

class FixedHead(nn.Module):
    """Stand-in for a fixed ETF layer: a buffer weight, no bias."""

    def __init__(self, k, d):
        super().__init__()
        self.register_buffer("weight", torch.randn(k, d))

    def forward(self, h):
        return h @ self.weight.T


def test_custom_classifier():
    head = FixedHead(10, 128)
    model = build_model("cnn", classifier=head)
    assert model.classifier is head
    check(model, torch.randn(4, 1, 28, 28), 10, 128)
    assert count_parameters(model) == count_parameters(model.backbone)
    lin = nn.Linear(512, 4, bias=False)
    assert build_model("mlp", num_classes=4, classifier=lin).classifier is lin


def test_bad_input_refused():
    with pytest.raises(ValueError, match="arch.*mlp.*resnet18"):
        build_model("resnet50")
    with pytest.raises(ValueError, match="stem"):
        build_model("resnet18", stem="tiny")
    with pytest.raises(ValueError, match="stem"):
        build_model("cnn", stem="imagenet")
    with pytest.raises(ValueError, match="fixdim_block"):
        build_model("resnet18", feature_dim=10, fixdim_block="first")
    with pytest.raises(ValueError, match="fixdim_block"):
        build_model("vgg11", feature_dim=10, fixdim_block="both")
    with pytest.raises(ValueError, match="depth"):
        build_model("vgg11", depth=3)
    with pytest.raises(ValueError, match="width"):
        build_model("cnn", width=0)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", num_classes=1.5)
    with pytest.raises(ValueError, match=r"classifier.weight.*\(num_classes=10, feature_dim=128\)"):
        build_model("cnn", classifier=nn.Linear(64, 10))
    with pytest.raises(ValueError, match="classifier"):
        build_model("cnn", classifier=nn.ReLU())
    with pytest.raises(TypeError, match="classifier"):
        NCModel(nn.Identity(), nn.ReLU())
