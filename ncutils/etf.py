"""Simplex equiangular tight frames (ETFs) and a fixed-ETF classifier layer.

A simplex ETF of K vectors is K unit vectors whose pairwise cosines all equal -1/(K-1), the most
separated configuration of K points on a sphere. Its Gram matrix is K/(K-1) I - 1/(K-1) 11^T.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["simplex_etf", "etf_gram", "ETFClassifier"]


def etf_gram(num_classes: int, dtype=torch.float64) -> torch.Tensor:
    """The Gram matrix K/(K-1) I - 1/(K-1) 11^T of a unit-norm simplex ETF."""
    k = _check_k(num_classes)
    return (k * torch.eye(k, dtype=dtype) - torch.ones(k, k, dtype=dtype)) / (k - 1)


def _check_k(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return num_classes


def _helmert_coordinates(k: int) -> torch.Tensor:
    """(K-1) x K coordinates of the ETF in an orthonormal basis of the plane sum(x) = 0."""
    # Rows of the Helmert matrix (without its constant first row) are an orthonormal basis of 1^perp.
    basis = torch.zeros(k - 1, k, dtype=torch.float64)
    for j in range(1, k):
        basis[j - 1, :j] = 1.0
        basis[j - 1, j] = -float(j)
        basis[j - 1] /= math.sqrt(j * (j + 1))
    centered = torch.eye(k, dtype=torch.float64) - 1.0 / k
    return basis @ centered * math.sqrt(k / (k - 1))


def simplex_etf(num_classes: int, dim: int, seed: int | None = None, dtype=None) -> torch.Tensor:
    """A ``dim x num_classes`` matrix whose unit-norm columns form a simplex ETF.

    ``dim`` must be at least ``num_classes - 1``. Without a seed the frame is a fixed, reproducible
    one (for ``dim >= K`` the classic ``sqrt(K/(K-1)) (I - 11^T/K)`` padded with zero rows); with a
    seed it is rotated by a random orthonormal map drawn from that seed.
    """
    k = _check_k(num_classes)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < k - 1:
        raise ValueError(f"dim must be an integer >= num_classes - 1 = {k - 1}, got {dim!r}")
    if seed is None:
        if dim >= k:
            frame = torch.zeros(dim, k, dtype=torch.float64)
            frame[:k] = (torch.eye(k, dtype=torch.float64) - 1.0 / k) * math.sqrt(k / (k - 1))
        else:
            frame = _helmert_coordinates(k)
    else:
        gen = torch.Generator().manual_seed(int(seed))
        gauss = torch.randn(dim, k - 1, generator=gen, dtype=torch.float64)
        q, r = torch.linalg.qr(gauss)
        q = q * torch.sign(torch.diagonal(r))  # Haar-distributed orthonormal columns
        frame = q @ _helmert_coordinates(k)
    return frame.to(dtype or torch.get_default_dtype())


class ETFClassifier(nn.Module):
    """A linear classifier whose K x d weight is a simplex ETF that is never trained.

    The weight is a buffer, not a parameter: no gradient, no optimizer state, no weight decay, and it
    travels with ``state_dict``. An optional learnable bias can be added.
    """

    def __init__(self, in_features: int, num_classes: int, bias: bool = False,
                 seed: int | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, num_classes
        self.register_buffer("weight", simplex_etf(num_classes, in_features, seed=seed).T.contiguous())
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(features, self.weight.to(features.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.out_features}, " \
               f"bias={self.bias is not None}, fixed=True"
