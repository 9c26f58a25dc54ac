"""Networks that expose their penultimate features.

Every model is an :class:`NCModel`: ``backbone`` maps x to features h (B x d) and
``classifier`` (weight K x d, optional bias) maps h to logits. Build one with :func:`build_model`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NCModel", "build_model", "count_parameters", "ARCHS", "FIXDIM_BLOCKS"]


class NCModel(nn.Module):
    """``backbone`` (x -> h, B x d) followed by a linear ``classifier`` (h -> logits, B x K)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, arch: str = ""):
        super().__init__()
        weight = getattr(classifier, "weight", None)
        if not isinstance(classifier, nn.Module) or not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise TypeError("classifier must be an nn.Module with a 2-D .weight of shape K x d")
        self.backbone, self.classifier, self.arch = backbone, classifier, arch

    @property
    def num_classes(self) -> int:
        return self.classifier.weight.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.classifier.weight.shape[1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def logits_and_features(self, x: torch.Tensor):
        h = self.backbone(x)
        return self.classifier(h), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ----------------------------------------------------------------------------- building blocks

def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=bias), nn.BatchNorm2d(cout))


def _conv_bn_relu(cin: int, cout: int, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(*_conv_bn(cin, cout, bias=bias), nn.ReLU(inplace=True))


class _GlobalPool(nn.Sequential):
    def __init__(self):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _init_convs(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _mlp(in_channels, input_size, width, depth, feature_dim):
    dims = [in_channels * input_size ** 2] + [width] * (depth - 1) + [feature_dim]
    layers = [nn.Flatten(1)]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _cnn(in_channels, widths: Sequence[int]):
    """conv3x3-BN-ReLU blocks, max-pool after all but the last, then global average pool."""
    layers, cin = [], in_channels
    for i, c in enumerate(widths):
        layers += [_conv_bn_relu(cin, c)] + ([nn.MaxPool2d(2)] if i < len(widths) - 1 else [])
        cin = c
    return _init_convs(nn.Sequential(*layers, _GlobalPool()))


class BasicBlock(nn.Module):
    """ResNet basic block (conv3x3 cin -> mid, conv3x3 mid -> cout, ``mid`` = cout unless given);
    1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1, mid: Optional[int] = None):
        super().__init__()
        mid = cout if mid is None else mid
        self.body = nn.Sequential(*_conv_bn(cin, mid, stride=stride), nn.ReLU(inplace=True), *_conv_bn(mid, cout))
        self.shortcut = _conv_bn(cin, cout, k=1, stride=stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


FIXDIM_BLOCKS = ("authors", "both")


def _resnet18(in_channels, width, feature_dim, stem, fixdim_block="authors"):
    if stem == "cifar":
        layers = [*_conv_bn(in_channels, width), nn.ReLU(inplace=True)]
    elif stem == "imagenet":
        layers = [*_conv_bn(in_channels, width, k=7, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    else:
        raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
    cin = width
    for stage, (w, stride) in enumerate(zip([width, 2 * width, 4 * width, 8 * width], [1, 2, 2, 2])):
        last = feature_dim if stage == 3 else w  # only the very last block may change d
        # "authors" (Zhu et al.'s fixdim): conv1 keeps w -> w, conv2 is w -> d; "both": w -> d -> d
        mid = w if fixdim_block == "authors" else None
        layers += [BasicBlock(cin, w, stride), BasicBlock(w, last, mid=mid)]
        cin = last
    return _init_convs(nn.Sequential(*layers, _GlobalPool()))


_VGG11 = [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"]  # channels in units of width


class _PadTo(nn.Module):
    def __init__(self, pad: int):
        super().__init__()
        self.pad = (pad // 2, pad - pad // 2) * 2

    def forward(self, x):
        return F.pad(x, self.pad)


def _vgg11(in_channels, input_size, width, feature_dim):
    pad = max(0, 32 - input_size)
    layers, cin = ([_PadTo(pad)] if pad else []), in_channels
    n_convs = sum(v != "M" for v in _VGG11)
    for v in _VGG11:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            n_convs -= 1
            cout = v * width if n_convs else feature_dim
            layers.append(_conv_bn_relu(cin, cout, bias=True))  # torchvision's VGG keeps conv biases
            cin = cout
    return _init_convs(nn.Sequential(*layers, _GlobalPool()))


# ----------------------------------------------------------------------------- factory

ARCHS = {  # arch -> (default width, default feature_dim as a function of width)
    "mlp": (512, lambda w: w),
    "cnn": (32, lambda w: 4 * w),
    "resnet18": (64, lambda w: 8 * w),
    "vgg11": (64, lambda w: 8 * w),
}


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def build_model(arch: str, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                width: Optional[int] = None, feature_dim: Optional[int] = None,
                classifier="learned", stem: str = "cifar", depth: Optional[int] = None,
                etf_bias: bool = False, fixdim_block: str = "authors") -> NCModel:
    """Build an :class:`NCModel`.

    arch: "mlp" (``depth`` hidden layers, default 3, of ``width`` 512), "cnn" (4 conv blocks of
    width, 2w, 4w, 4w channels, width 32), "resnet18" (stage widths w..8w, width 64, ``stem``
    "cifar" = 3x3 stride 1 or "imagenet" = 7x7 stride 2 + max-pool), "vgg11" (VGG11-BN, width 64,
    inputs under 32 px zero-padded to 32). ``feature_dim`` sets the width of the last feature layer.
    For resnet18 only the last BasicBlock changes, as ``fixdim_block`` says: "authors" (default; Zhu
    et al.'s ``fixdim`` in tding1/Neural-Collapse ``models/resnet.py``): conv1 keeps 3x3 8w -> 8w + BN,
    conv2 becomes 3x3 8w -> d + BN(d), the shortcut a 1x1 conv 8w -> d + BN(d); "both": both 3x3
    convolutions shrink (8w -> d, d -> d), with the same shortcut. ``classifier``: "learned" (``nn.Linear(d, K)`` with
    bias), "etf" (a fixed simplex-ETF :class:`ncutils.etf.ETFClassifier`, learnable bias only if
    ``etf_bias``), or any module with a ``.weight`` of shape K x d.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    for name, value in [("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)]:
        _positive_int(name, value)
    width = _positive_int("width", ARCHS[arch][0] if width is None else width)
    d = _positive_int("feature_dim", ARCHS[arch][1](width) if feature_dim is None else feature_dim)
    if depth is not None and arch != "mlp":
        raise ValueError(f"depth is only used by arch='mlp', got depth={depth!r} for arch={arch!r}")
    if stem != "cifar" and arch != "resnet18":
        raise ValueError(f"stem is only used by arch='resnet18', got stem={stem!r} for arch={arch!r}")
    if fixdim_block not in FIXDIM_BLOCKS:
        raise ValueError(f"fixdim_block must be one of {FIXDIM_BLOCKS}, got {fixdim_block!r}")
    if fixdim_block != "authors" and arch != "resnet18":
        raise ValueError(f"fixdim_block is only used by arch='resnet18', got fixdim_block={fixdim_block!r} "
                         f"for arch={arch!r}")

    if arch == "mlp":
        backbone = _mlp(in_channels, input_size, width, _positive_int("depth", 3 if depth is None else depth), d)
    elif arch == "cnn":
        backbone = _cnn(in_channels, [width, 2 * width, 4 * width, d])
    elif arch == "resnet18":
        backbone = _resnet18(in_channels, width, d, stem, fixdim_block)
    else:
        backbone = _vgg11(in_channels, input_size, width, d)

    if classifier in (None, "learned"):
        classifier = nn.Linear(d, num_classes)
    elif classifier == "etf":
        from .etf import ETFClassifier

        classifier = ETFClassifier(d, num_classes, bias=etf_bias)
    elif isinstance(classifier, str):
        raise ValueError(f"classifier must be 'learned', 'etf' or an nn.Module, got {classifier!r}")
    else:
        shape = tuple(getattr(getattr(classifier, "weight", None), "shape", ()))
        if shape != (num_classes, d):
            raise ValueError(f"classifier.weight must have shape (num_classes={num_classes}, feature_dim={d}), "
                             f"got {shape or 'no weight'}")
    return NCModel(backbone, classifier, arch)
