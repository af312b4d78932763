"""Sparse layers: ``SparseLinear`` (CSR, truly sparse) and ``MaskedLinear`` (dense × mask reference)."""

from sparta.nn import init, structure
from sparta.nn.activations import AllReLU, Dropout
from sparta.nn.functional import sparse_linear
from sparta.nn.linear import SparseLinear
from sparta.nn.masked import MaskedConv2d, MaskedLinear

__all__ = ["AllReLU", "Dropout", "MaskedConv2d", "MaskedLinear", "SparseLinear", "init", "sparse_linear", "structure"]
