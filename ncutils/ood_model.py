"""The model pieces of Harun, Gallardo & Kanan (2025) that control collapse per layer.

Read from the authors' code (yousuf907/NC-OOD, ``vgg/vgg_etf.py``, ``vgg/custom_loss.py``,
``vgg/pretrain_vgg_nc.py``):

* **Entropy regularizer** (``EntropyRegLoss``) on the *encoder* output: L2-normalize the batch's
  embeddings z_i, find each one's nearest neighbour in the batch by the largest inner product
  (itself excluded), and take ``-mean_i log(||z_i - z_nn(i)|| + eps)``; the distance is
  ``torch.nn.PairwiseDistance(2, eps=1e-8)``. Weight ``alpha`` = 0.05 in the loss
  ``CE(label_smoothing=0.1) + alpha * reg``.
* **Fixed simplex-ETF projector** after the encoder: two bias-free linear layers d -> 4d -> d with
  a ReLU between them, each weight fixed to ``sqrt(c/(c-1)) (I - 11^T / c)`` cut to its
  rectangular shape (``torch.eye(out, in) - ones(out, in) / c``) with c = d, the projector's output
  dimension, for both layers; the output is L2-normalized (eps 1e-8) and fed to a trainable
  linear classifier (Xavier-uniform weight). The weights never train: here they are buffers.

:class:`OODNet` wraps an encoder of :func:`ncutils.models.build_model` with the optional projector
and the classifier; :meth:`OODNet.layer_modules` names the layers the chapter measures.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["entropy_regularizer", "etf_projector_weight", "ETFProjector", "OODNet", "build_ood_model"]


def entropy_regularizer(embeddings: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``-mean_i log(||z_i - z_nn(i)|| + eps)`` with z_i = embeddings_i / ||embeddings_i|| and
    nn(i) the other sample of the batch with the largest inner product with z_i (the authors'
    ``EntropyRegLoss``; differentiable in ``embeddings``)."""
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a B x d tensor, got {getattr(embeddings, 'shape', type(embeddings))}")
    if embeddings.shape[0] < 2:
        raise ValueError(f"embeddings must hold at least 2 samples (a nearest neighbour), got {embeddings.shape[0]}")
    if not (isinstance(eps, float) and eps > 0):
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    z = F.normalize(embeddings, p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = z @ z.T
        dots.fill_diagonal_(-1.0)  # the authors' trick: a unit vector's own product becomes the minimum
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(z, z[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()


def etf_projector_weight(out_features: int, in_features: int, c: int) -> torch.Tensor:
    """``sqrt(c/(c-1)) (eye(out, in) - ones(out, in) / c)``, the authors' fixed projector weight."""
    for name, v in (("out_features", out_features), ("in_features", in_features), ("c", c)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if c < 2:
        raise ValueError(f"c must be >= 2, got {c}")
    eye = torch.eye(out_features, in_features)
    return math.sqrt(c / (c - 1)) * (eye - torch.ones(out_features, in_features) / c)


class ETFProjector(nn.Module):
    """d -> hidden -> d, bias-free, ReLU between, weights fixed (buffers), L2-normalized output."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
        hidden = 4 * dim if hidden is None else hidden
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        self.dim, self.hidden = dim, hidden
        self.register_buffer("weight1", etf_projector_weight(hidden, dim, c=dim))
        self.register_buffer("weight2", etf_projector_weight(dim, hidden, c=dim))
        self.hidden_layer = nn.Identity()  # a hook point: the first layer's output (pre-ReLU)
        self.output_layer = nn.Identity()  # a hook point: the second layer's output, before the L2 norm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        u = self.hidden_layer(F.linear(h, self.weight1))
        return F.normalize(self.output_layer(F.linear(F.relu(u), self.weight2)), p=2, dim=-1, eps=1e-8)


class OODNet(nn.Module):
    """encoder (x -> h, B x d) -> optional :class:`ETFProjector` -> linear classifier.

    ``logits_and_features`` returns the logits and the classifier's input, so the training-loop
    helpers of :mod:`ncutils.train` and the metrics of :mod:`ncutils.metrics` apply unchanged.
    """

    def __init__(self, encoder: nn.Module, dim: int, num_classes: int, projector: bool = False,
                 hidden: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.projector = ETFProjector(dim, hidden) if projector else None
        self.classifier = nn.Linear(dim, num_classes)

    def embed(self, x: torch.Tensor):
        """(encoder output, classifier input, logits), as the authors' ``model(x, embed=True)``."""
        h = self.encoder(x)
        z = self.projector(h) if self.projector is not None else h
        return h, z, self.classifier(z)

    def logits_and_features(self, x: torch.Tensor):
        _, z, logits = self.embed(x)
        return logits, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)[2]

    def layer_modules(self) -> "OrderedDict[str, nn.Module]":
        """The measured layers, input to output, as the authors' hooks (``retrieve_any_layer.py``
        on ``features.<i>`` and ``projection_head.<i>``) see them: the output of every convolution
        of the encoder *before* its normalization (``conv1``.., for an MLP encoder every Linear
        layer, ``linear1``..), the last of them named ``encoder`` (their ``features.49`` for VGG17,
        pooled to 1 x 1: :meth:`layer_pool_sides`); then ``embedding``, the encoder's pooled output
        (after normalization, ReLU and pooling: what the entropy regularizer and the projector see,
        not measured by the authors); with a projector its hidden layer ``projector_hidden``
        (``projection_head.0``), its output ``projector`` before the L2 normalization
        (``projection_head.2``; the normalization is in ``forward``) and ``projector_normalized``,
        the unit-norm input of the classifier."""
        layers = [m for m in self.encoder.modules() if isinstance(m, nn.Conv2d)]
        kind = "conv"
        if not layers:
            layers, kind = [m for m in self.encoder.modules() if isinstance(m, nn.Linear)], "linear"
        if not layers:
            raise ValueError("the encoder has no Conv2d or Linear layer to measure")
        out = OrderedDict((f"{kind}{i + 1}", m) for i, m in enumerate(layers[:-1]))
        out["encoder"] = layers[-1]
        out["embedding"] = self.encoder
        if self.projector is not None:
            out["projector_hidden"] = self.projector.hidden_layer
            out["projector"] = self.projector.output_layer
            out["projector_normalized"] = self.projector
        return out

    @staticmethod
    def layer_pool_sides() -> dict:
        """Pooling sides that differ from the default 2 x 2: the last conv layer, 1 x 1 (the
        authors' special case for ``features.49``)."""
        return {"encoder": 1}


def build_ood_model(arch: str, num_classes: int, width: int | None = None, projector: bool = False,
                    hidden_mult: int = 4, seed: int = 0, in_channels: int = 1, input_size: int = 28) -> OODNet:
    """An :class:`OODNet` on the encoder of ``ncutils.models.build_model(arch, ...)``.

    The encoder and the classifier are drawn from ``seed`` only (the projector draws nothing), so
    networks built with the same seed with and without a projector start from the same weights.
    The classifier keeps ``nn.Linear``'s default bias; its weight is Xavier-uniform, as the authors'.
    The global random state is left as it was.
    """
    from .models import build_model

    if isinstance(hidden_mult, bool) or not isinstance(hidden_mult, int) or hidden_mult < 1:
        raise ValueError(f"hidden_mult must be a positive integer, got {hidden_mult!r}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        base = build_model(arch, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                           width=width)
        dim = base.feature_dim
        net = OODNet(base.backbone, dim, num_classes, projector=projector, hidden=hidden_mult * dim)
        nn.init.xavier_uniform_(net.classifier.weight)
    finally:
        torch.random.set_rng_state(gen_state)
    return net
